//! Configuration of the `notify` function.
