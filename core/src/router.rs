//! HTTP router (being written).
