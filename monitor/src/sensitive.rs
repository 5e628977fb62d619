//! Sensitive resources: which file paths and network endpoints are marked `sensitive`.
