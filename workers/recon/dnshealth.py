"""How well the name servers answered: per-resolver counters and a verdict a task can report.

:class:`ServerStats` is what the UDP engine counts while it runs (plain lists indexed like the
client's servers, so counting costs a list increment per packet). :func:`verdict` turns it into a
:class:`DnsHealth`: per-resolver counts, whether the lookups can be trusted (``ok``) and a
sentence naming the resolvers that failed and how, such as ``resolver 127.0.0.9:53 did not answer
40 of 40 queries``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_FAILED_SHARE = 0.05
"""Share of lookups that may end without an answer (after retries) before the verdict is not ok."""
DEGRADED_SHARE = 0.1
"""Share of a resolver's packets that may go unanswered or fail before it is named as a problem."""
RCODE_SERVFAIL, RCODE_REFUSED = 2, 5


class ServerStats:
    """Traffic counters of one DNS client, kept across its engines.

    Only ``sent`` is counted on the hot path (once per packet); everything else is counted where
    something went wrong, and the rest is derived. ``retries`` counts packets sent again and
    ``failed`` the questions that got no usable answer after every retry. The lists count packets
    per server: ``sent`` (retries included), ``timeouts``, ``servfail``, ``refused``, ``other``
    (any other error rcode), ``abandoned`` (outstanding when the client closed) and
    ``unreachable`` (the socket reported the server's port unreachable, or a send failed). A packet
    neither timed out, abandoned nor still in flight was answered.
    """

    __slots__ = (
        "abandoned",
        "failed",
        "other",
        "refused",
        "retries",
        "sent",
        "servfail",
        "timeouts",
        "unreachable",
    )

    def __init__(self, servers: int) -> None:
        self.retries = 0
        self.failed = 0
        self.sent = [0] * servers
        self.timeouts = [0] * servers
        self.servfail = [0] * servers
        self.refused = [0] * servers
        self.other = [0] * servers
        self.abandoned = [0] * servers
        self.unreachable = [0] * servers

    @property
    def questions(self) -> int:
        """Questions asked (packets sent less the retries)."""
        return sum(self.sent) - self.retries

    def error_reply(self, server: int, rcode: int) -> None:
        """Count a reply from ``server`` whose rcode was an error (neither NOERROR nor NXDOMAIN)."""
        if rcode == RCODE_SERVFAIL:
            self.servfail[server] += 1
        elif rcode == RCODE_REFUSED:
            self.refused[server] += 1
        else:
            self.other[server] += 1


@dataclass(frozen=True)
class ResolverHealth:
    """Packet counts of one name server (``resolver`` is ``ip:port``)."""

    resolver: str
    sent: int
    answered: int
    timeouts: int
    servfail: int
    refused: int
    other_errors: int
    unreachable: int

    @property
    def failures(self) -> int:
        """Packets that brought no usable answer: timed out or answered with an error rcode."""
        return self.timeouts + self.servfail + self.refused + self.other_errors

    @property
    def healthy(self) -> bool:
        """True unless every packet failed or more than :data:`DEGRADED_SHARE` of them did."""
        if not self.sent:
            return True
        return self.failures < self.sent and self.failures <= self.sent * DEGRADED_SHARE

    def problem(self) -> str:
        """One sentence saying how the server failed (empty when it did not)."""
        parts = []
        if self.timeouts:
            parts.append(f"did not answer {self.timeouts}")
        if self.servfail:
            parts.append(f"answered SERVFAIL to {self.servfail}")
        if self.refused:
            parts.append(f"answered REFUSED to {self.refused}")
        if self.other_errors:
            parts.append(f"answered an error to {self.other_errors}")
        if not parts:
            return ""
        text = f"resolver {self.resolver} " + " and ".join(parts) + f" of {self.sent} queries"
        if self.unreachable and not self.answered:
            text += " (port unreachable)"
        return text


@dataclass(frozen=True)
class DnsHealth:
    """The verdict on a client's name servers.

    ``ok`` is False when more than ``MAX_FAILED_SHARE`` of the lookups (``questions``) ended
    without a usable answer (``failed``), so the names found cannot be trusted to be complete.
    ``reason`` says why in one line; it also names failing resolvers when retries (on them or on
    the other resolvers) got the answers anyway (``ok`` stays True then). ``problems`` holds one
    sentence per failing resolver.
    """

    ok: bool
    reason: str
    questions: int
    failed: int
    resolvers: list[ResolverHealth] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        """A JSON- and BSON-ready dict (for a task's result or statistic)."""
        return asdict(self)


def verdict(
    stats: ServerStats,
    servers: list[tuple[str, int]],
    inflight: list[int] | None = None,
    max_failed: float = MAX_FAILED_SHARE,
) -> DnsHealth:
    """Judge ``stats`` of a client whose name servers are ``servers`` (same order).

    ``inflight`` counts the packets per server still waiting for an answer (not counted as answered).
    """
    waiting = inflight or [0] * len(servers)
    resolvers = [
        ResolverHealth(
            resolver=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            sent=stats.sent[i],
            answered=stats.sent[i] - stats.timeouts[i] - stats.abandoned[i] - waiting[i],
            timeouts=stats.timeouts[i],
            servfail=stats.servfail[i],
            refused=stats.refused[i],
            other_errors=stats.other[i],
            unreachable=stats.unreachable[i],
        )
        for i, (host, port) in enumerate(servers)
    ]
    problems = [r.problem() for r in resolvers if not r.healthy]
    questions, failed = stats.questions, stats.failed
    ok = failed <= questions * max_failed
    if not questions:
        reason = "no DNS queries were sent"
    elif problems:
        reason = "; ".join(problems)
        if not ok:
            reason = f"{failed} of {questions} DNS lookups failed: {reason}"
        else:
            reason += f"; {questions - failed} of {questions} DNS lookups were answered in the end"
    elif not ok:
        reason = f"{failed} of {questions} DNS lookups failed"
    else:
        answered = sum(r.answered for r in resolvers)
        reason = f"{answered} of {sum(stats.sent)} DNS queries answered"
    return DnsHealth(ok, reason, questions, failed, resolvers, problems)
