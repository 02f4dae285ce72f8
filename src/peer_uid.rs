//! Which local user owns the other end of a loopback TCP connection, asked of the kernel over
//! `NETLINK_SOCK_DIAG` (what `ss -e` uses): one exact-match `inet_diag` request for the client's
//! socket, one answer carrying its uid.
//!
//! Netlink rather than `/proc/net/tcp`: the shipped unit's `ProcSubset=pid` hides `/proc/net`,
//! and an exact lookup costs one round trip instead of parsing a table that grows with every
//! socket on the host. The unit allows `AF_NETLINK` for this.
//!
//! Each runtime thread keeps one netlink socket for its lookups.
//!
//! A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`);
//! the client's socket is then an IPv4 one, so the lookup asks the IPv4 table first.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::{SOCK_DIAG, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

/// `SOCK_DIAG_BY_FAMILY`: the request and answer message type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IPPROTO_TCP: u8 = 6;
/// `AF_INET` / `AF_INET6` as the kernel numbers them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `nlmsghdr` (16 bytes) + `inet_diag_req_v2` (8 bytes + a 48-byte `inet_diag_sockid`).
const REQUEST_LEN: usize = 16 + 8 + 48;
/// Where the uid sits in an answer: `nlmsghdr`, then `inet_diag_msg`'s family, state, timer and
/// retrans bytes, its 48-byte socket id, and the expires, rqueue and wqueue words. The socket's
/// inode follows it.
const UID_OFFSET: usize = 16 + 4 + 48 + 12;
const INODE_OFFSET: usize = UID_OFFSET + 4;
/// The kernel answers from memory; a lookup that takes longer than this is treated as failed.
const TIMEOUT: Duration = Duration::from_millis(200);

/// The uid owning the client socket of the loopback connection from `remote` (the client's
/// address as the server sees it) to `local` (the server's own address), if the kernel knows it.
pub fn tcp_peer_uid(remote: SocketAddr, local: SocketAddr) -> Option<u32> {
    client_socket(remote, local).map(|s| s.uid)
}

/// What the kernel says of the client's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientSocket {
    uid: u32,
    inode: u32,
}

fn client_socket(remote: SocketAddr, local: SocketAddr) -> Option<ClientSocket> {
    let (remote4, local4) = (unmap(remote), unmap(local));
    if remote4.is_ipv4()
        && local4.is_ipv4()
        && let Some(found) = lookup(remote4, local4)
    {
        return Some(found);
    }
    lookup(remote, local)
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; any other address unchanged.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn lookup(client: SocketAddr, server: SocketAddr) -> Option<ClientSocket> {
    if client.is_ipv4() != server.is_ipv4() {
        return None;
    }
    // One netlink socket per thread, kept: a lookup is then one send and one receive, which
    // matters on the path of every new connection.
    thread_local! {
        static SOCKET: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
        static SEQUENCE: Cell<u32> = const { Cell::new(0) };
    }
    let sequence = SEQUENCE.with(|s| {
        s.set(s.get().wrapping_add(1));
        s.get()
    });
    SOCKET.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = open_socket();
        }
        let socket = slot.as_ref()?;
        let found = ask(socket, client, server, sequence);
        if found.is_err() {
            // A broken socket is not kept; the next lookup opens a new one.
            *slot = None;
        }
        found.ok().flatten()
    })
}

fn open_socket() -> Option<OwnedFd> {
    let socket =
        rustix::net::socket(AddressFamily::NETLINK, SocketType::DGRAM, Some(SOCK_DIAG)).ok()?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(TIMEOUT),
    )
    .ok()?;
    Some(socket)
}

/// One request and its answer: answers to earlier requests (one that timed out) are skipped
/// by their sequence number. `Err` when the socket failed.
fn ask(
    socket: &OwnedFd,
    client: SocketAddr,
    server: SocketAddr,
    sequence: u32,
) -> Result<Option<ClientSocket>, rustix::io::Errno> {
    let kernel = SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(
        socket,
        &request(client, server, sequence),
        SendFlags::empty(),
        &kernel,
    )?;
    let mut answer = [0u8; 512];
    loop {
        let (len, _) = rustix::net::recv(socket, &mut answer, RecvFlags::empty())?;
        let answer = answer.get(..len).unwrap_or_default();
        if sequence_of(answer) == Some(sequence) {
            return Ok(parse(answer));
        }
    }
}

fn sequence_of(answer: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(answer.get(8..12)?.try_into().ok()?))
}

/// An exact-match `inet_diag_req_v2` for the client's socket: its own address is the source.
fn request(client: SocketAddr, server: SocketAddr, sequence: u32) -> [u8; REQUEST_LEN] {
    let mut m = [0u8; REQUEST_LEN];
    m[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&sequence.to_ne_bytes());
    // inet_diag_req_v2
    m[16] = if client.is_ipv4() { AF_INET } else { AF_INET6 };
    m[17] = IPPROTO_TCP;
    m[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    // inet_diag_sockid: ports and addresses in network byte order.
    let id = 24;
    m[id..id + 2].copy_from_slice(&client.port().to_be_bytes());
    m[id + 2..id + 4].copy_from_slice(&server.port().to_be_bytes());
    put_ip(&mut m[id + 4..id + 20], client.ip());
    put_ip(&mut m[id + 20..id + 36], server.ip());
    // interface 0 (any); cookie INET_DIAG_NOCOOKIE: look up by address, not by cookie.
    m[id + 40..id + 48].fill(0xff);
    m
}

fn put_ip(slot: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => slot[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => slot.copy_from_slice(&v6.octets()),
    }
}

/// The socket in the kernel's answer; `None` for an error answer (no such socket), a short one,
/// or an orphan: a socket its process already closed has no inode and reports uid 0, which
/// must not pass for root.
fn parse(answer: &[u8]) -> Option<ClientSocket> {
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?))
    };
    let found = ClientSocket {
        uid: word(UID_OFFSET)?,
        inode: word(INODE_OFFSET)?,
    };
    (found.inode != 0).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(listen: &str) -> (std::net::TcpStream, std::net::TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind(listen).unwrap_or_else(|e| panic!("{e}"));
        let server = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = std::net::TcpStream::connect(server).unwrap_or_else(|e| panic!("{e}"));
        let (accepted, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peer, client.local_addr().unwrap_or_else(|e| panic!("{e}")));
        (client, accepted, server)
    }

    #[test]
    fn finds_the_owner_of_real_loopback_connections() {
        let me = rustix::process::geteuid().as_raw();
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let (client, accepted, server) = connected(listen);
            let peer = accepted.peer_addr().unwrap_or_else(|e| panic!("{e}"));
            // The answer is the client's own socket: its inode is the one fstat sees.
            let inode = rustix::fs::fstat(&client).map(|s| s.st_ino).ok();
            let found = client_socket(peer, server);
            assert_eq!(found.map(|f| f.uid), Some(me), "{listen}");
            assert_eq!(found.map(|f| u64::from(f.inode)), inode, "{listen}");
            // A port nobody uses: no such socket.
            let nobody = SocketAddr::new(peer.ip(), 1);
            assert_eq!(tcp_peer_uid(nobody, server), None, "{listen}");
        }
    }

    /// Issue 7: a dual-stack listener sees IPv4 peers as `::ffff:127.0.0.1`; the client's
    /// socket lives in the IPv4 table.
    #[test]
    fn ipv4_mapped_peers_are_looked_up_as_ipv4() {
        let Ok(listener) = std::net::TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this host: nothing dual-stack to check
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let client =
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let (accepted, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        let local = accepted.local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert!(peer.to_string().starts_with("[::ffff:127.0.0.1]"), "{peer}");
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(tcp_peer_uid(peer, local), Some(me));
        drop(client);
    }

    #[test]
    fn error_short_and_orphan_answers_are_no_uid() {
        let mut error = [0u8; 36];
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse(&error), None);
        assert_eq!(parse(&[]), None);
        let mut short = [0u8; 40];
        short[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert_eq!(parse(&short), None);
        // Issue 7 review: an orphaned socket (closed by its process) says uid 0, inode 0.
        let mut orphan = [0u8; INODE_OFFSET + 4];
        orphan[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert_eq!(parse(&orphan), None);
        let mut live = orphan;
        live[UID_OFFSET..UID_OFFSET + 4].copy_from_slice(&1000u32.to_ne_bytes());
        live[INODE_OFFSET..INODE_OFFSET + 4].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(
            parse(&live),
            Some(ClientSocket {
                uid: 1000,
                inode: 77
            })
        );
    }
}
