//! Commands that look at the bucket and the config without backing up or restoring:
//! [`preflight`] checks a bucket and its credentials, [`check_config`] a config file.

pub mod check_config;
pub mod preflight;
