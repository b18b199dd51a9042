//! What an upgrade hands over, kept by the main thread: copies of every listening socket (and
//! of the admin socket) that follow reloads, and the control socket's file, removed at exit
//! unless a new instance replaced it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_core::config::Config;

/// Copies (dups) of every listening socket, per listener address and worker, kept by the main
/// thread so that a new instance can be handed the very sockets the workers accept on. They
/// follow reloads; `/drain_listeners` drops them (a listener closed on purpose must refuse).
pub(crate) struct HandoverSockets {
    pub(super) workers: usize,
    pub(super) listeners: Vec<(std::net::SocketAddr, Vec<std::os::fd::OwnedFd>)>,
    pub(super) admin: Option<(crate::control::AdminAddress, std::os::fd::OwnedFd)>,
    /// The health verdicts to hand over, with the config they are shaped like.
    pub(super) health: Option<(Arc<crate::health::SharedHealth>, Arc<Config>)>,
}

impl HandoverSockets {
    pub(super) fn new(config: &Config, sockets: &[Vec<std::net::TcpListener>]) -> io::Result<Self> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        // A virtual listener's socket listens nowhere: nothing to hand over.
        for (i, l) in config.listeners.iter().enumerate() {
            if !l.bind_to_port {
                continue;
            }
            let fds = sockets
                .iter()
                .map(|mine| mine[i].try_clone().map(std::os::fd::OwnedFd::from))
                .collect::<io::Result<Vec<_>>>()?;
            listeners.push((l.address, fds));
        }
        Ok(HandoverSockets {
            workers: sockets.len(),
            listeners,
            admin: None,
            health: None,
        })
    }

    /// The copies for `next`: kept for addresses both configs have, from `fresh` (per worker,
    /// per listener of `next`) for new ones.
    pub(super) fn reshaped(
        &self,
        next: &Config,
        fresh: &[Vec<Option<std::net::TcpListener>>],
    ) -> io::Result<Self> {
        let mut listeners = Vec::with_capacity(next.listeners.len());
        for (i, l) in next.listeners.iter().enumerate() {
            if !l.bind_to_port {
                continue;
            }
            let fds = match self.listeners.iter().find(|(a, _)| *a == l.address) {
                Some((_, fds)) => fds
                    .iter()
                    .map(std::os::fd::OwnedFd::try_clone)
                    .collect::<io::Result<Vec<_>>>()?,
                None => fresh
                    .iter()
                    .filter_map(|mine| mine[i].as_ref())
                    .map(|s| s.try_clone().map(std::os::fd::OwnedFd::from))
                    .collect::<io::Result<Vec<_>>>()?,
            };
            listeners.push((l.address, fds));
        }
        let admin = match &self.admin {
            Some((a, fd)) => Some((a.clone(), fd.try_clone()?)),
            None => None,
        };
        Ok(HandoverSockets {
            workers: self.workers,
            listeners,
            admin,
            health: self.health.clone(),
        })
    }

    /// What the control socket sends to a new instance (dups of the copies).
    pub(super) fn offer(&self) -> io::Result<crate::control::HandoverOffer> {
        let listeners = self
            .listeners
            .iter()
            .map(|(a, fds)| {
                fds.iter()
                    .map(std::os::fd::OwnedFd::try_clone)
                    .collect::<io::Result<Vec<_>>>()
                    .map(|fds| (*a, fds))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let admin = match &self.admin {
            Some((a, fd)) => Some((a.clone(), fd.try_clone()?)),
            None => None,
        };
        Ok(crate::control::HandoverOffer {
            workers: self.workers,
            listeners,
            admin,
            health: self
                .health
                .as_ref()
                .map(|(h, c)| h.verdicts(c))
                .unwrap_or_default(),
            tickets: crate::tls_tickets::export(),
        })
    }
}

/// The control socket's file as this instance bound it: removed at exit unless another
/// instance (an upgrade) has replaced it since.
pub(super) struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    pub(super) fn of(path: &Path) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    pub(super) fn remove_if_still_ours(self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
