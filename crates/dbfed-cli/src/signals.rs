//! Stop signals of the long-running commands: Ctrl-C (SIGINT) and, on Unix, SIGTERM (what
//! `kill`, systemd, Docker and Kubernetes send).

use anyhow::{Context, Result};

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// The exit code shells report for a process this signal ended: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }
}

/// A listener for the stop signals, installed when created: a signal that arrives before
/// [`StopSignals::recv`] is awaited is not lost.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (inside a Tokio runtime).
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            let terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot listen for SIGTERM")?;
            Ok(Self { terminate })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub async fn recv(&mut self) -> Result<Stop> {
        #[cfg(unix)]
        {
            tokio::select! {
                signal = tokio::signal::ctrl_c() => {
                    signal.context("cannot listen for Ctrl-C")?;
                    Ok(Stop::Interrupt)
                }
                _ = self.terminate.recv() => Ok(Stop::Terminate),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("cannot listen for Ctrl-C")?;
            Ok(Stop::Interrupt)
        }
    }
}
