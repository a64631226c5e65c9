"""The audit log's hash chain: how an entry is sealed and how a chain is verified (pure, no I/O).

Each entry's hash is HMAC-SHA256, under the hub's audit key (a file in the data dir, never
in the database), over its sequence number, the previous entry's hash and its content. So
an entry changed, removed or inserted directly in the database breaks the chain, and
someone who can write the database but not read the data dir cannot re-seal it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.hub.records import AuditEntry

GENESIS = "0" * 64
MAX_DETAIL_BYTES = 4096


def canonical(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_fields(
    *, at: datetime, actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]
) -> dict[str, Any]:
    """The content of an entry as stored, with `detail` bounded so no caller can bloat the log."""
    if len(canonical(detail)) > MAX_DETAIL_BYTES:
        detail = {"truncated": True}
    return {
        "at": at,
        "actor": actor[:128],
        "action": action[:64],
        "target": target[:256],
        "outcome": outcome[:32],
        "detail": detail,
    }


def seal(key: bytes, seq: int, prev_hash: str, fields: dict[str, Any]) -> str:
    """The hash of entry `seq` following `prev_hash`, keyed by the audit key."""
    body = dict(fields)
    body["at"] = fields["at"].isoformat(timespec="microseconds")
    message = canonical({"seq": seq, "prev": prev_hash, "entry": body})
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _fields_of(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of a verification: `ok`, or the first bad sequence number and what is wrong.

    `end_seq`/`end_hash` are where the walked chain ends (the last good entry when not ok).
    """

    ok: bool
    entries: int
    end_seq: int
    end_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(entries: Iterable[AuditEntry], *, key: bytes) -> ChainReport:
    """Walk the chain in sequence order and name the first entry altered, removed or inserted.

    Args:
        entries: every entry, ascending by seq.
        key: the audit key the entries were sealed with.
    """
    expected_seq, prev_hash, count = 1, GENESIS, 0
    iterator: Iterator[AuditEntry] = iter(entries)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        count += 1
        problem: str | None = None
        bad_seq = current.seq
        if current.seq > expected_seq:
            gone = (
                f"entry {expected_seq}"
                if current.seq == expected_seq + 1
                else f"entries {expected_seq}..{current.seq - 1}"
            )
            problem, bad_seq = f"{gone} removed", expected_seq
        elif current.seq < expected_seq:
            problem = f"entry {current.seq} out of order"
        elif current.prev_hash != prev_hash:
            problem = (
                f"entry {current.seq} does not follow entry {current.seq - 1}: "
                "an entry before it was removed or altered"
            )
        elif not hmac.compare_digest(seal(key, current.seq, current.prev_hash, _fields_of(current)), current.hash):
            inserted = following is not None and following.prev_hash == prev_hash
            problem = f"entry {current.seq} was {'inserted' if inserted else 'altered'}"
        if problem is not None:
            return ChainReport(
                ok=False,
                entries=count,
                end_seq=expected_seq - 1,
                end_hash=prev_hash,
                first_bad_seq=bad_seq,
                problem=problem,
            )
        expected_seq, prev_hash = current.seq + 1, current.hash
        current = following
    return ChainReport(ok=True, entries=count, end_seq=expected_seq - 1, end_hash=prev_hash)


def check_head(report: ChainReport, head: tuple[int, str]) -> ChainReport:
    """Compare a good walk's end with the head the database records; catches removal of the last entries."""
    if not report.ok or head == (report.end_seq, report.end_hash):
        return report
    if head[0] > report.end_seq:
        problem = (
            f"entry {head[0]} removed"
            if head[0] == report.end_seq + 1
            else f"entries {report.end_seq + 1}..{head[0]} removed"
        )
        return replace(report, ok=False, first_bad_seq=report.end_seq + 1, problem=problem)
    return replace(
        report, ok=False, first_bad_seq=head[0], problem=f"the chain head (entry {head[0]}) does not match the log"
    )


def check_checkpoint(report: ChainReport, checkpoint: tuple[int, str], hash_at_checkpoint: str | None) -> ChainReport:
    """Compare a good chain with a head recorded earlier, outside the database.

    Catches what the chain alone cannot: the newest entries removed together with the head
    row, or history rewritten by someone holding the audit key.

    Args:
        report: the walk's result.
        checkpoint: (seq, hash) an operator recorded from an earlier `audit verify`.
        hash_at_checkpoint: the hash the log holds now at that seq (None if there is no such entry).
    """
    if not report.ok:
        return report
    seq, expected = checkpoint
    if seq > report.end_seq or hash_at_checkpoint is None:
        return replace(
            report,
            ok=False,
            first_bad_seq=report.end_seq + 1,
            problem=f"entries {report.end_seq + 1}..{seq} removed (the checkpoint is at {seq})",
        )
    if not hmac.compare_digest(hash_at_checkpoint, expected):
        return replace(
            report,
            ok=False,
            first_bad_seq=seq,
            problem=f"entry {seq} differs from the checkpoint: history was rewritten",
        )
    return report
