//! The cluster file (DESIGN.md §7). (stub: being written)
