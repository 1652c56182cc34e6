//! TCP transport. (stub: being written)
