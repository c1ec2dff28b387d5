//! Listener sockets: one per service per shard, all bound to the same
//! address with SO_REUSEPORT so the kernel spreads connections over shards.
//!
//! Sockets are made with socket2 rather than the runtime's `bind` so that
//! the backlog is ours to set (tokio-uring fixes it at 1024).
//!
//! SO_REUSEPORT lets any process of the same user join a port's group, and
//! the kernel would then split clients between two servers with different
//! secrets and databases. So each group also takes a [`PortClaim`]: an
//! abstract Unix socket named after the port (`@chatd-port-7400`), which
//! only one process can hold. Abstract sockets belong to the network
//! namespace, as ports do, and the kernel frees one when its process ends
//! however it ends, so a crashed server leaves nothing to clean up. A
//! second server on a claimed port fails to start, naming the holder's
//! pid; the shards of one process share the claim. (A lock file would be
//! shared across network namespaces that have ports of their own, and left
//! behind where permissions differ.) The cost: one chatd per port number
//! per network namespace, whatever the address.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};

use socket2::{Domain, Protocol, Socket, Type};

/// A bound SO_REUSEPORT socket, not listening yet (so it gets no
/// connections before the port is claimed).
fn reuseport_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds one SO_REUSEPORT listener socket.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = reuseport_socket(addr)?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// This process's hold on a client port (see the module doc): held as long
/// as the value lives, released by the kernel when the process ends.
#[derive(Debug)]
pub struct PortClaim {
    _socket: UnixListener,
}

/// The abstract socket address that stands for `port`.
fn claim_addr(port: u16) -> io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(format!("chatd-port-{port}").as_bytes())
}

/// Claims `port` for this process; fails with `AddrInUse`, naming the
/// holder, when another process has it.
pub fn claim_port(port: u16) -> io::Result<PortClaim> {
    let addr = claim_addr(port)?;
    match UnixListener::bind_addr(&addr) {
        Ok(socket) => Ok(PortClaim { _socket: socket }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let holder = holder_pid(&addr).map_or_else(String::new, |pid| format!(" (pid {pid})"));
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "port {port} is already served by another chatd process{holder}; \
                     stop it or give this one other ports"
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// The pid of the process holding the claim at `addr`, from the kernel's
/// credentials of a connection to it.
fn holder_pid(addr: &UnixAddr) -> Option<i32> {
    let probe = UnixStream::connect_addr(addr).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which we
    // own and whose size `len` is; the descriptor is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            probe.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}

/// Binds `count` listeners on `addr`, after claiming its port for this
/// process. A port-0 address is resolved by the first bind, and the rest
/// bind that same port.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<TcpListener>, PortClaim)> {
    let first = reuseport_socket(addr)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener bound to a non-IP address"))?;
    let claim = claim_port(bound.port())?;
    first.listen(backlog)?;
    let mut all = Vec::with_capacity(count);
    all.push(first.into());
    for _ in 1..count {
        all.push(bind_reuseport(bound, backlog)?);
    }
    Ok((all, claim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_group_shares_one_resolved_port() {
        let (group, _claim) = bind_group("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        let ports: Vec<u16> = group
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]));
    }

    #[test]
    fn a_claimed_port_cannot_be_claimed_again_until_released() {
        let (group, claim) = bind_group("127.0.0.1:0".parse().unwrap(), 2, 128).unwrap();
        let addr = group[0].local_addr().unwrap();
        // SO_REUSEPORT alone would let this group grow; the claim refuses.
        let err = bind_group(addr, 1, 128).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "port {} is already served by another chatd process (pid {})",
                addr.port(),
                std::process::id()
            )),
            "{msg}"
        );
        drop(claim);
        drop(group);
        let (_again, _claim) = bind_group(addr, 1, 128).unwrap();
    }
}
