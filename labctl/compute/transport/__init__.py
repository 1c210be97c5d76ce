"""Running commands and moving data, locally or on a remote cluster over SSH."""

from labctl.compute.transport.rsync import (
    Progress,
    TransferError,
    TransferHandle,
    TransferState,
    TransferStatus,
    is_transient,
    parse_progress,
    poll,
    rsync_argv,
    start_background,
    stop_transfer,
    transfer_alive,
)
from labctl.compute.transport.runner import (
    AuthError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    HostKeyError,
    LocalRunner,
    Result,
    Runner,
    TransportError,
)
from labctl.compute.transport.sessions import Session, SessionDownError, Sessions, waiting_message
from labctl.compute.transport.ssh import SSHRunner
from labctl.compute.transport.target import SSHTarget, private_dir, ssh_command, ssh_options

__all__ = [
    "AuthError",
    "CommandError",
    "CommandTimeoutError",
    "ConnectError",
    "HostKeyError",
    "LocalRunner",
    "Progress",
    "Result",
    "Runner",
    "SSHRunner",
    "SSHTarget",
    "Session",
    "SessionDownError",
    "Sessions",
    "TransferError",
    "TransferHandle",
    "TransferState",
    "TransferStatus",
    "TransportError",
    "is_transient",
    "parse_progress",
    "poll",
    "private_dir",
    "rsync_argv",
    "ssh_command",
    "ssh_options",
    "start_background",
    "stop_transfer",
    "transfer_alive",
    "waiting_message",
]
