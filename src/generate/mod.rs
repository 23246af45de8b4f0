//! `generate`: filled in by its issue.
