pub mod backend;
pub mod config;
pub mod etcd;
pub mod event;
pub mod netlink;
pub mod overlay;
pub mod run;
pub mod supervise;
