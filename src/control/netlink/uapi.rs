//! Constants from the Linux UAPI headers (`linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_addr.h`, `linux/neighbour.h`), typed as they appear on the wire. The `libc` crate
//! has only some of them, and with varying integer types.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLA_HDRLEN: usize = 4;
/// `nla_type` carries two flag bits above the type itself.
pub const NLA_TYPE_MASK: u16 = !(1 << 15 | 1 << 14);

/// Socket option (`SOL_NETLINK`): check dump requests strictly and apply their filters (Linux 4.20).
pub const NETLINK_GET_STRICT_CHK: i32 = 12;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x001;
pub const NLM_F_ACK: u16 = 0x004;
pub const NLM_F_DUMP_INTR: u16 = 0x010;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_DUMP: u16 = 0x300;
/// On an `NLMSG_ERROR`: only the header of our request is echoed back.
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an `NLMSG_ERROR` or `NLMSG_DONE`: extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_OPERSTATE: u16 = 16;
/// `IF_OPER_UNKNOWN` and `IF_OPER_UP` of `linux/if.h`: devices without carrier reporting (TUN,
/// dummy, loopback) say unknown.
pub const IF_OPER_UNKNOWN: u8 = 0;
pub const IF_OPER_UP: u8 = 6;
pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_MULTIPATH: u16 = 9;
pub const RTA_TABLE: u16 = 15;
pub const NDA_DST: u16 = 1;
pub const NDA_LLADDR: u16 = 2;

pub const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
pub const AF_INET: u8 = libc::AF_INET as u8;
pub const IFF_UP: u32 = libc::IFF_UP as u32;
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTN_UNICAST: u8 = 1;
pub const RTPROT_BOOT: u8 = 3;
pub const RTPROT_KERNEL: u8 = 2;
pub const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
/// In a delete request: match a route of any scope.
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTNH_F_ONLINK: u32 = 4;
pub const NUD_PERMANENT: u16 = 0x80;
