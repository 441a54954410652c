//! process support (todo)
