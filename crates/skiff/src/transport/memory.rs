//! In-process transport. (stub: being written)
