//! An optional TUN interface in the sandbox's network namespace.
//!
//! The caller runs a userspace TCP/IP stack on the host side of the TUN
//! device: [`crate::Sandbox::take_tun`] hands it the device's fd, from which
//! it reads the IPv4 packets the sandbox sends and to which it writes the
//! packets the sandbox receives. Inside, the sandbox sees `lo` and one
//! interface (`eth0`) with an address, a default route via the gateway and
//! an `/etc/resolv.conf` naming the DNS server.
//!
//! Who does what:
//! * the network namespace is made by the user namespace holder
//!   ([`crate::userns`]) so that it belongs to the sandbox's user namespace;
//! * the sandbox's first process, still host root, enters it and creates and
//!   configures the device ([`create_tun`]). It must be host root: the
//!   device node `/dev/net/tun` is usually mode 0600 and owned by host root,
//!   a uid that sandbox root cannot act for. The TUN file's network
//!   namespace is fixed when `/dev/net/tun` is opened, hence the `setns`
//!   first. `/dev/net/tun` is never made visible inside the sandbox, and the
//!   sandbox keeps no CAP_NET_ADMIN, so it cannot reconfigure the interface;
//! * PID 1 writes `/etc/resolv.conf` after `pivot_root`
//!   ([`write_resolv_conf`]);
//! * the owner deletes the interface on destroy ([`delete_link`]) so that a
//!   reader of the TUN fd sees an error rather than silence.
//!
//! The functions run in the child (everything but [`NetPlan::new`] and
//! [`delete_link`]) make raw syscalls over prepared data and do not
//! allocate.

use crate::rootfs::Step;
use crate::{sys, JailError};
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

/// The sandbox's view of its network: one TUN interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Interface name inside the sandbox.
    pub if_name: String,
    /// The sandbox's IPv4 address on it.
    pub address: Ipv4Addr,
    /// Prefix length of `address`'s subnet (which must hold `gateway`).
    pub prefix_len: u8,
    /// Next hop of the default route.
    pub gateway: Ipv4Addr,
    /// The only `nameserver` in `/etc/resolv.conf`.
    pub dns: Ipv4Addr,
    /// MTU of the interface (68..=65535).
    pub mtu: u32,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            if_name: "eth0".into(),
            address: Ipv4Addr::new(100, 96, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(100, 96, 0, 1),
            dns: Ipv4Addr::new(100, 96, 0, 1),
            mtu: 65520,
        }
    }
}

/// [`NetworkSpec`] as the child needs it, prepared before fork.
pub(crate) struct NetPlan {
    /// NUL-terminated name for `ifreq` and `rtentry`.
    name: CString,
    address: libc::sockaddr_in,
    netmask: libc::sockaddr_in,
    gateway: libc::sockaddr_in,
    mtu: libc::c_int,
    /// Content of `/etc/resolv.conf`.
    resolv_conf: Vec<u8>,
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

impl NetPlan {
    pub(crate) fn new(spec: &NetworkSpec) -> Result<Self, JailError> {
        let invalid = |what: String| Err(JailError::InvalidNetwork(what));
        let name = &spec.if_name;
        // The kernel's dev_valid_name, checked here for a clearer error.
        if name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name == "."
            || name == ".."
            || name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
        {
            return invalid(format!(
                "interface name {name:?} must be 1 to {} bytes without '/', ':', NUL or spaces",
                libc::IFNAMSIZ - 1
            ));
        }
        if spec.prefix_len > 32 {
            return invalid(format!("prefix length {} is over 32", spec.prefix_len));
        }
        if !(68..=65535).contains(&spec.mtu) {
            return invalid(format!("MTU {} is not within 68..=65535", spec.mtu));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(spec.prefix_len))
            .unwrap_or(0);
        Ok(Self {
            name: CString::new(name.as_bytes()).expect("checked for NUL above"),
            address: sockaddr(spec.address),
            netmask: sockaddr(Ipv4Addr::from(mask)),
            gateway: sockaddr(spec.gateway),
            mtu: spec.mtu as libc::c_int,
            resolv_conf: format!("nameserver {}\noptions timeout:1 attempts:2\n", spec.dns)
                .into_bytes(),
        })
    }

    /// A zeroed `ifreq` naming the interface. No allocation.
    fn ifreq(&self) -> libc::ifreq {
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // name is shorter than IFNAMSIZ (checked in new), so the zeroed
        // array stays NUL-terminated.
        for (dst, src) in req.ifr_name.iter_mut().zip(self.name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        req
    }

    pub(crate) fn resolv_conf(&self) -> &[u8] {
        &self.resolv_conf
    }
}

/// Best effort: turns IPv6 off in the current network namespace, so the
/// kernel sends no router solicitations or MLD reports through the TUN
/// device and programs fall back to IPv4 at once. `default` first, so the
/// TUN device created afterwards starts without IPv6. The host's /proc
/// shows the calling task's network namespace under /proc/sys/net.
pub(crate) fn disable_ipv6() {
    for path in [
        c"/proc/sys/net/ipv6/conf/default/disable_ipv6",
        c"/proc/sys/net/ipv6/conf/all/disable_ipv6",
    ] {
        let _ = sys::write_file(path, b"1");
    }
}

/// Creates and configures the TUN device in the current network namespace:
/// returns its fd (close-on-exec) and its interface index.
pub(crate) fn create_tun(net: &NetPlan) -> Result<(RawFd, libc::c_int), (Step, io::Error)> {
    let tun = sys::open(c"/dev/net/tun", libc::O_RDWR, 0).map_err(|e| ("open /dev/net/tun", e))?;
    let mut req = net.ifreq();
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq, which is valid and
    // correctly sized.
    if let Err(e) = sys::check_int(unsafe { libc::ioctl(tun, libc::TUNSETIFF, &mut req) }) {
        sys::close(tun);
        return Err(("TUNSETIFF", e));
    }
    match configure(net) {
        Ok(index) => Ok((tun, index)),
        Err(e) => {
            sys::close(tun);
            Err(e)
        }
    }
}

/// `ip link set lo up` in the current network namespace (a namespace made
/// with `unshare` starts with `lo` down).
pub(crate) fn loopback_up() -> Result<(), (Step, io::Error)> {
    // SAFETY: socket with integer arguments.
    let sock = sys::check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })
    .map_err(|e| ("open network control socket", e))?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid, correctly sized ifreq naming `lo`.
    let res = sys::check_int(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) })
        .and_then(|_| {
            // SAFETY: SIOCGIFFLAGS filled in the flags member.
            unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
            // SAFETY: as above.
            sys::check_int(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req) })
        })
        .map(drop)
        .map_err(|e| ("bring up lo", e));
    sys::close(sock);
    res
}

/// `ip link set mtu`, `ip addr add`, `ip link set up` and `ip route add
/// default`, by ioctl on an AF_INET socket of the current namespace.
fn configure(net: &NetPlan) -> Result<libc::c_int, (Step, io::Error)> {
    // SAFETY: socket with integer arguments.
    let sock = sys::check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })
    .map_err(|e| ("open network control socket", e))?;
    let res = configure_with(sock, net);
    sys::close(sock);
    res
}

fn configure_with(sock: RawFd, net: &NetPlan) -> Result<libc::c_int, (Step, io::Error)> {
    let ioctl = |name: Step, request: libc::Ioctl, req: &mut libc::ifreq| {
        // SAFETY: `req` is a valid, correctly sized ifreq for the call.
        sys::check_int(unsafe { libc::ioctl(sock, request, req as *mut libc::ifreq) })
            .map(drop)
            .map_err(|e| (name, e))
    };
    let set_addr = |name: Step, request: libc::Ioctl, addr: &libc::sockaddr_in| {
        let mut req = net.ifreq();
        // SAFETY: the union's sockaddr member is as large as sockaddr_in
        // (both 16 bytes); the write stays within the ifreq.
        unsafe {
            std::ptr::write(
                (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<libc::sockaddr_in>(),
                *addr,
            );
        }
        ioctl(name, request, &mut req)
    };

    let mut req = net.ifreq();
    ioctl("get interface index", libc::SIOCGIFINDEX, &mut req)?;
    // SAFETY: SIOCGIFINDEX filled in the ifindex member.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };

    let mut req = net.ifreq();
    req.ifr_ifru.ifru_mtu = net.mtu;
    ioctl("set MTU", libc::SIOCSIFMTU, &mut req)?;
    set_addr("set IPv4 address", libc::SIOCSIFADDR, &net.address)?;
    set_addr("set netmask", libc::SIOCSIFNETMASK, &net.netmask)?;

    let mut req = net.ifreq();
    ioctl("bring up network interface", libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl("bring up network interface", libc::SIOCSIFFLAGS, &mut req)?;

    // SAFETY: rtentry is plain data (rt_dev null); all-zero is valid.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    let any = sockaddr(Ipv4Addr::UNSPECIFIED);
    for (dst, src) in [
        (&mut route.rt_dst, &any),
        (&mut route.rt_genmask, &any),
        (&mut route.rt_gateway, &net.gateway),
    ] {
        // SAFETY: sockaddr and sockaddr_in are both 16 bytes.
        unsafe { std::ptr::write((dst as *mut libc::sockaddr).cast(), *src) };
    }
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // The kernel only reads the name (strncpy_from_user).
    route.rt_dev = net.name.as_ptr().cast_mut();
    // SAFETY: a valid rtentry whose rt_dev points at a NUL-terminated
    // string kept alive by `net`.
    sys::check_int(unsafe { libc::ioctl(sock, libc::SIOCADDRT, &route) })
        .map_err(|e| ("add default route", e))?;
    Ok(index)
}

/// A NETLINK_ROUTE socket of the current network namespace, with which the
/// owner deletes the interface on destroy ([`delete_link`]).
pub(crate) fn open_rtnetlink() -> io::Result<RawFd> {
    // SAFETY: socket with integer arguments.
    sys::check_int(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })
}

/// Writes `/etc/resolv.conf` in PID 1 after `pivot_root`, never following
/// a symlink there (images may ship it as one, e.g. into /run): the old
/// entry is unlinked and a new file made with O_EXCL|O_NOFOLLOW. Does
/// nothing where /etc does not exist. No allocation.
pub(crate) fn write_resolv_conf(content: &[u8]) -> io::Result<()> {
    let dir = match sys::open(c"/etc", libc::O_PATH | libc::O_DIRECTORY, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let res = write_in(dir, content);
    sys::close(dir);
    res
}

fn write_in(dir: RawFd, content: &[u8]) -> io::Result<()> {
    let name = c"resolv.conf";
    // SAFETY: valid dir fd and C string.
    if let Err(e) = sys::check_int(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }) {
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: valid dir fd and C string.
    let fd = sys::check_int(unsafe { libc::openat(dir, name.as_ptr(), flags, 0o644) })?;
    // fchmod: the create mode was filtered by the umask.
    let res = sys::write_all(fd, content)
        // SAFETY: fchmod on an fd we own.
        .and_then(|()| sys::check_int(unsafe { libc::fchmod(fd, 0o644) }).map(drop));
    sys::close(fd);
    res
}

/// `ip link del` of interface `index`, through a NETLINK_ROUTE socket of the
/// sandbox's network namespace. Unregistering the device detaches every
/// open TUN fd of it: their readers get EBADFD (poll: POLLERR) instead of
/// waiting forever. ENODEV where it is already gone (its last fd closed).
pub(crate) fn delete_link(rtnl: RawFd, index: libc::c_int) -> io::Result<()> {
    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        info: libc::ifinfomsg,
    }
    // SAFETY: plain data; all-zero is a valid value.
    let mut req: Request = unsafe { std::mem::zeroed() };
    req.header.nlmsg_len = std::mem::size_of::<Request>() as u32;
    req.header.nlmsg_type = libc::RTM_DELLINK;
    req.header.nlmsg_flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    req.header.nlmsg_seq = 1;
    req.info.ifi_family = libc::AF_UNSPEC as u8;
    req.info.ifi_index = index;
    // SAFETY: `req` is a valid buffer of the given size. An unconnected
    // netlink socket sends to the kernel.
    let sent = unsafe {
        libc::send(
            rtnl,
            (&req as *const Request).cast(),
            std::mem::size_of::<Request>(),
            libc::MSG_NOSIGNAL,
        )
    };
    sys::check(sent as libc::c_long)?;
    // The kernel handles the request within send(): the ack is queued.
    #[repr(C)]
    struct Ack {
        header: libc::nlmsghdr,
        error: libc::c_int,
        rest: [u8; 256],
    }
    // SAFETY: plain data; all-zero is a valid value.
    let mut ack: Ack = unsafe { std::mem::zeroed() };
    // SAFETY: `ack` is a valid, writable buffer of the given size.
    let n = unsafe {
        libc::recv(
            rtnl,
            (&mut ack as *mut Ack).cast(),
            std::mem::size_of::<Ack>(),
            libc::MSG_DONTWAIT,
        )
    };
    let n = sys::check(n as libc::c_long)? as usize;
    if n < std::mem::size_of::<libc::nlmsghdr>() + 4
        || ack.header.nlmsg_type != libc::NLMSG_ERROR as u16
    {
        return Err(io::Error::other("unexpected rtnetlink reply"));
    }
    match ack.error {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_checks_the_spec() {
        let plan = NetPlan::new(&NetworkSpec::default()).unwrap();
        assert_eq!(plan.name.as_bytes(), b"eth0");
        assert_eq!(
            u32::from_be(plan.netmask.sin_addr.s_addr),
            u32::from(Ipv4Addr::new(255, 255, 255, 252))
        );
        assert_eq!(
            u32::from_be(plan.address.sin_addr.s_addr),
            u32::from(Ipv4Addr::new(100, 96, 0, 2))
        );
        assert_eq!(
            plan.resolv_conf(),
            b"nameserver 100.96.0.1\noptions timeout:1 attempts:2\n"
        );
        let req = plan.ifreq();
        assert_eq!(
            req.ifr_name[..5],
            [b'e', b't', b'h', b'0', 0].map(|b| b as libc::c_char)
        );

        for prefix in [0u8, 32] {
            let spec = NetworkSpec {
                prefix_len: prefix,
                ..NetworkSpec::default()
            };
            let mask = NetPlan::new(&spec).unwrap().netmask.sin_addr.s_addr;
            assert_eq!(mask, if prefix == 0 { 0 } else { u32::MAX });
        }
        for bad in [
            NetworkSpec {
                if_name: String::new(),
                ..NetworkSpec::default()
            },
            NetworkSpec {
                if_name: "a-name-far-too-long".into(),
                ..NetworkSpec::default()
            },
            NetworkSpec {
                if_name: "et h0".into(),
                ..NetworkSpec::default()
            },
            NetworkSpec {
                prefix_len: 33,
                ..NetworkSpec::default()
            },
            NetworkSpec {
                mtu: 65536,
                ..NetworkSpec::default()
            },
        ] {
            assert!(
                matches!(NetPlan::new(&bad), Err(JailError::InvalidNetwork(_))),
                "{bad:?}"
            );
        }
    }
}
