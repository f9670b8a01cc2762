"""Wildcard zones that rotate their answers: learning what random names get, and confirming survivors.

A wildcard zone may answer each random name with a different address of a pool (or a different
subset of it), or with a CNAME whose target rotates its own addresses. A few probes then see only
part of the pool, and a name answered with an address they missed looks real. So:

- :func:`learn_wildcard` keeps probing random labels until the answers stop bringing anything new
  (bounded), collecting the addresses and CNAME targets the wildcard gives;
- :func:`overlaps` treats an answer sharing *any* address or CNAME target with the wildcard as the
  wildcard's (a real name whose records overlap the wildcard's is lost, as in ARL);
- :func:`confirm` asks the names that survived again: a wildcard answer rotates into the learnt
  pool, a real name keeps its own records. An address or CNAME target shared by many survivors of
  one parent is the wildcard's too (pool members no probe saw).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from workers.recon.dns import NOERROR, DnsClient, DomainRecord, Wildcard, random_label

FIRST_PROBES = 3
"""Probes below a parent before deciding whether it has a wildcard at all."""
BATCH = 8
MAX_PROBES = 64
"""Probes per parent at most while a rotating wildcard keeps showing new answers."""
REQUERIES = 3
"""Times a surviving name below a wildcard is asked again."""
CROWD = 8
"""Survivors of one parent sharing an address or CNAME target that make it the wildcard's."""


def parent_of(name: str) -> str:
    """The name one level up (``a.b.example.com`` -> ``b.example.com``)."""
    return name.partition(".")[2]


def overlaps(wildcard: Wildcard, record: DomainRecord) -> bool:
    """Tell whether ``record`` shares an address or a CNAME target with ``wildcard``'s answers."""
    if not wildcard:
        return False
    return not wildcard.ips.isdisjoint(record.ips) or not wildcard.cnames.isdisjoint(record.cnames)


def _absorb(wildcard: Wildcard, records: Iterable[DomainRecord | None]) -> tuple[bool, bool]:
    """Add the records' answers to ``wildcard``; (some record resolved, something was new)."""
    answered = new = False
    for record in records:
        if record is None:
            continue
        answered = True
        if not wildcard.ips.issuperset(record.ips) or not wildcard.cnames.issuperset(record.cnames):
            new = True
            wildcard.ips.update(record.ips)
            wildcard.cnames.update(record.cnames)
    return answered, new


async def learn_wildcard(
    client: DnsClient,
    parent: str,
    seed: Wildcard | None = None,
    *,
    inherit: bool = False,
    max_probes: int = MAX_PROBES,
) -> Wildcard:
    """The wildcard answers below ``parent``: ``seed``'s plus what random labels get now.

    Probes :data:`FIRST_PROBES` random labels: none resolving means no wildcard here (an empty
    :class:`Wildcard`, even with a ``seed``). Otherwise probing goes on in batches until the
    answers bring nothing new for a while (longer for a bigger pool) or ``max_probes`` were sent.
    With ``inherit`` (a parent below a zone whose wildcard is ``seed``), a first batch that brings
    nothing new ends it: the parent answers with the zone's wildcard.
    """
    learnt = Wildcard(set(seed.ips), set(seed.cnames)) if seed else Wildcard()
    probes = quiet = 0
    size = FIRST_PROBES
    while probes < max_probes:
        records = await asyncio.gather(*(client.lookup(f"{random_label()}.{parent}") for _ in range(size)))
        probes += size
        answered, new = _absorb(learnt, records)
        if probes == size and not answered:
            return Wildcard()
        if new:
            quiet = 0
        else:
            quiet += size
            if inherit or quiet >= max(BATCH, 3 * len(learnt.ips), 3 * len(learnt.cnames)):
                break
        size = BATCH
    return learnt


async def _requery(client: DnsClient, record: DomainRecord, times: int) -> DomainRecord:
    """``record`` with the A answers (addresses, CNAME targets) of ``times`` more queries added."""
    seen = DomainRecord(record.domain, list(record.a), list(record.aaaa), list(record.cnames))
    for _ in range(times):
        reply = await client.query(record.domain, "A")
        if reply[0] == NOERROR:
            seen.absorb(reply, "A")
    return seen


async def confirm(
    client: DnsClient,
    survivors: list[DomainRecord],
    wildcards: dict[str, Wildcard],
    *,
    requeries: int = REQUERIES,
    crowd: int = CROWD,
) -> list[DomainRecord]:
    """The ``survivors`` that still look real after asking them again (order kept).

    Only names below a parent with a wildcard (``wildcards``, by parent) are checked; the others
    are kept as they are. Each is asked ``requeries`` more times, and dropped when its answers then
    overlap the wildcard. Of the rest, an address or CNAME target shared by ``crowd`` or more of
    one parent's names is added to that parent's wildcard and those names dropped. ``wildcards`` is
    extended in place with what is learnt.
    """
    suspects = [r for r in survivors if wildcards.get(parent_of(r.domain))]
    seen = await asyncio.gather(*(_requery(client, record, requeries) for record in suspects))
    observed: dict[str, DomainRecord] = {}
    counts: Counter[tuple[str, bool, str]] = Counter()
    for record, answers in zip(suspects, seen, strict=True):
        parent = parent_of(record.domain)
        wildcard = wildcards[parent]
        if overlaps(wildcard, answers):
            wildcard.ips.update(answers.ips)
            wildcard.cnames.update(answers.cnames)
            continue
        observed[record.domain] = answers
        counts.update((parent, False, ip) for ip in set(answers.ips))
        counts.update((parent, True, cname) for cname in set(answers.cnames))
    for (parent, is_cname, value), count in counts.items():
        if count >= crowd:
            (wildcards[parent].cnames if is_cname else wildcards[parent].ips).add(value)
    kept = []
    for record in survivors:
        below = wildcards.get(parent_of(record.domain))
        if not below:
            kept.append(record)
        elif record.domain in observed and not overlaps(below, observed[record.domain]):
            kept.append(record)
    return kept
