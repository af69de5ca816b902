//! One NVMe admin command through the kernel's `NVME_IOCTL_ADMIN_CMD` (linux/nvme_ioctl.h): Get
//! Log Page for the SMART / Health Information log. This is the project's only unsafe code; the
//! page is decoded by safe code (`fleet_facts::nvme::parse`). Needs `CAP_SYS_ADMIN`.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use fleet_facts::nvme::SMART_LOG_BYTES;

/// `struct nvme_passthru_cmd` (alias `nvme_admin_cmd`), 72 bytes.
#[repr(C)]
#[derive(Debug, Default)]
struct AdminCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}
const _: () = assert!(std::mem::size_of::<AdminCmd>() == 72);

nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, AdminCmd);

/// Get Log Page.
const OPCODE_GET_LOG_PAGE: u8 = 0x02;
/// Log identifier of SMART / Health Information.
const LOG_SMART: u32 = 0x02;
/// The controller as a whole, not one namespace.
const NSID_ALL: u32 = 0xffff_ffff;

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("unable to open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the admin command on {path} was not permitted: reading the SMART log needs CAP_SYS_ADMIN"
    )]
    NotPermitted { path: PathBuf },
    #[error("the admin command on {path} failed")]
    Ioctl {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path} refused Get Log Page (SMART) with NVMe status {status:#x}")]
    Status { path: PathBuf, status: i32 },
}

/// Reads the SMART / Health Information log page of the controller at `dev` (`/dev/nvme0`).
///
/// # Errors
/// The device cannot be opened, the ioctl fails, or the controller answers with an error status.
pub fn smart_log(dev: &Path) -> Result<[u8; SMART_LOG_BYTES], NvmeError> {
    let file = File::open(dev).map_err(|source| NvmeError::Open {
        path: dev.to_path_buf(),
        source,
    })?;
    let mut page = [0u8; SMART_LOG_BYTES];
    // Number of dwords, zero-based, in bits 16–27 of CDW10; the log identifier in bits 0–7.
    let numd = (SMART_LOG_BYTES / 4 - 1) as u32;
    let mut cmd = AdminCmd {
        opcode: OPCODE_GET_LOG_PAGE,
        nsid: NSID_ALL,
        addr: page.as_mut_ptr() as u64,
        data_len: SMART_LOG_BYTES as u32,
        cdw10: (numd << 16) | LOG_SMART,
        timeout_ms: 10_000,
        ..AdminCmd::default()
    };
    // SAFETY: `cmd` is a complete `nvme_passthru_cmd`; `addr` points at `page`, which is
    // `data_len` bytes long and outlives the call; the descriptor is open for the whole call.
    #[allow(unsafe_code)]
    let status = unsafe { nvme_admin_cmd(file.as_raw_fd(), &mut cmd) }.map_err(|source| {
        let path = dev.to_path_buf();
        match source {
            nix::Error::EPERM | nix::Error::EACCES => NvmeError::NotPermitted { path },
            source => NvmeError::Ioctl { path, source },
        }
    })?;
    if status != 0 {
        return Err(NvmeError::Status {
            path: dev.to_path_buf(),
            status,
        });
    }
    Ok(page)
}
