//! Who is asking: on a multi-user host a target's credentials can be limited to some local users
//! and groups (`allow_users`, `allow_groups`). On the control socket the kernel tells the peer's
//! uid (SO_PEERCRED); on the TCP endpoint keyfed finds the uid that owns the connecting socket in
//! `/proc/net/tcp` / `/proc/net/tcp6` (both ends are on this host).
//!
//! This stops other local users from reading a target's credentials. It does not stop root, a
//! process running as an allowed user, or anything that can act as one (ptrace, the user's own
//! files); and for TCP it relies on the connection coming from this host, which the loopback-only
//! default guarantees.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::Access;

/// Whether `uid` may have the credentials `access` guards. Root always may.
pub fn allowed(access: &Access, uid: u32) -> bool {
    if access.is_open() || uid == 0 || access.users.contains(&uid) {
        return true;
    }
    !access.groups.is_empty() && groups_of(uid).iter().any(|g| access.groups.contains(g))
}

/// The primary and supplementary groups of `uid`, from the user database.
fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let mut groups = vec![user.gid.as_raw()];
    if let Ok(name) = std::ffi::CString::new(user.name.as_bytes())
        && let Ok(list) = nix::unistd::getgrouplist(&name, user.gid)
    {
        groups.extend(list.iter().map(|g| g.as_raw()));
    }
    groups
}

/// The uid owning the local TCP socket connected from `peer` to `local`, if the kernel lists it.
pub fn tcp_peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let table = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    find_uid(&text, peer, local)
}

/// Scans a `/proc/net/tcp{,6}` table for the socket with local address `peer` and remote
/// address `local` (the client's side of our connection) and returns its uid.
fn find_uid(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (from, to, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        (parse_addr(from)? == peer && parse_addr(to)? == local)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// `0100007F:2AE1` (IPv4) or 32 hex digits and a port (IPv6), as the kernel prints them: each
/// 32-bit word in host byte order, the port big-endian.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_address_format() {
        if cfg!(target_endian = "little") {
            assert_eq!(parse_addr("0100007F:2AE1"), "127.0.0.1:10977".parse().ok());
            assert_eq!(
                parse_addr("00000000000000000000000001000000:0050"),
                "[::1]:80".parse().ok()
            );
        }
        assert_eq!(parse_addr("zz:1"), None);
        assert_eq!(parse_addr("0100007F"), None);
    }

    #[test]
    fn finds_the_owner_of_a_real_loopback_connection() {
        // A socket of known owner: this test process's own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let server = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = std::net::TcpStream::connect(server).unwrap_or_else(|e| panic!("{e}"));
        let (_accepted, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peer, client.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(tcp_peer_uid(peer, server), Some(me));
        assert_eq!(
            tcp_peer_uid("127.0.0.1:1".parse().unwrap_or(peer), server),
            None
        );
    }

    #[test]
    fn allow_lists() {
        let open = Access::default();
        assert!(allowed(&open, 1234));
        let only = Access {
            users: vec![1000],
            groups: vec![],
        };
        assert!(allowed(&only, 1000));
        assert!(allowed(&only, 0), "root always may");
        assert!(!allowed(&only, 1001));
        // nobody's primary group is nogroup (65534) on Debian.
        let group = Access {
            users: vec![],
            groups: vec![65534],
        };
        assert!(allowed(&group, 65534));
        assert!(!allowed(&group, 4242));
    }
}
