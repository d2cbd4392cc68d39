//! (module being written; see the Foundation issue)
