//! Configuration of the `reconcile` function.
