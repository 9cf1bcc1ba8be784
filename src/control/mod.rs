pub mod config;
pub mod netlink;
pub mod run;
