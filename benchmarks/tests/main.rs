//! End-to-end tests of `dbfed-bench`: scenarios at tiny sizes, then `report` on their output.

mod suite;
