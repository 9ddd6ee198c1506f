//! Unit tests of request dispatch.
