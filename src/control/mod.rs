pub mod api;
pub mod backend;
pub mod config;
pub mod event;
pub mod netlink;
pub mod overlay;
pub mod run;
pub mod supervise;
