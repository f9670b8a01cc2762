"""Wildcard zones that rotate their answers: learning what random names get, and confirming survivors.

A wildcard zone may answer each random name with a different address of a pool (or a different
subset of it), or with a CNAME whose target rotates its own addresses. A few probes then see only
part of the pool, and a name answered with an address they missed looks real. So:

- :func:`learn_wildcard` keeps probing random labels until the answers stop bringing anything new
  (bounded), collecting the addresses and CNAME targets the wildcard gives; :func:`wildcard_below`
  tells whether a name inside the zone answers with the zone's wildcard or one of its own;
- :func:`overlaps` treats an answer sharing *any* address or CNAME target with the wildcard as the
  wildcard's (a real name whose records overlap the wildcard's is lost, as in ARL);
- :func:`confirm` asks the names that survived again: a wildcard answer rotates into the learnt
  pool (and what it was answered with joins the pool), a real name keeps its own records. An
  address or CNAME target shared by many survivors below one wildcard is the wildcard's too.
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


async def _probe(client: DnsClient, parent: str, count: int) -> list[DomainRecord | None]:
    """Look up ``count`` random labels below ``parent``."""
    return list(await asyncio.gather(*(client.lookup(f"{random_label()}.{parent}") for _ in range(count))))


async def learn_wildcard(
    client: DnsClient, parent: str, seed: Wildcard | None = None, *, max_probes: int = MAX_PROBES
) -> Wildcard:
    """The wildcard answers below ``parent``: ``seed``'s plus what random labels get now (a new object).

    Probes :data:`FIRST_PROBES` random labels: none resolving means no wildcard here (an empty
    :class:`Wildcard`, even with a ``seed``). Otherwise probing goes on in batches until the
    answers bring nothing new for a while (longer for a bigger pool) or ``max_probes`` were sent.
    """
    learnt = Wildcard(set(seed.ips), set(seed.cnames)) if seed else Wildcard()
    probes = quiet = 0
    size = FIRST_PROBES
    while probes < max_probes:
        answered, new = _absorb(learnt, await _probe(client, parent, size))
        probes += size
        if probes == size and not answered:
            return Wildcard()
        if new:
            quiet = 0
        else:
            quiet += size
            if quiet >= max(BATCH, 3 * len(learnt.ips), 3 * len(learnt.cnames)):
                break
        size = BATCH
    return learnt


async def wildcard_below(client: DnsClient, parent: str, zone: Wildcard) -> Wildcard:
    """The wildcard below ``parent``, a name inside a zone whose wildcard is ``zone``.

    Random labels that do not resolve: none (an empty :class:`Wildcard`). Answers overlapping
    ``zone`` (within :data:`FIRST_PROBES` plus :data:`BATCH` probes, for a rotating pool): the
    zone's wildcard covers the parent, and ``zone`` itself is returned, extended with the answers,
    so that what is learnt later about it holds below every such parent. Other answers: a
    wildcard of the parent's own, learnt with :func:`learn_wildcard`.
    """
    records = await _probe(client, parent, FIRST_PROBES)
    if not any(records):
        return Wildcard()
    if zone:
        if not any(r is not None and overlaps(zone, r) for r in records):
            records += await _probe(client, parent, BATCH)
        if any(r is not None and overlaps(zone, r) for r in records):
            _absorb(zone, records)
            return zone
    return await learn_wildcard(client, parent)


def _learn(wildcard: Wildcard, observed: DomainRecord) -> None:
    """Add everything a name proved to be a wildcard answer was answered with to the wildcard."""
    wildcard.ips.update(observed.ips)
    wildcard.cnames.update(observed.cnames)


async def confirm(
    client: DnsClient,
    survivors: list[DomainRecord],
    wildcards: dict[str, Wildcard],
    *,
    requeries: int = REQUERIES,
    crowd: int = CROWD,
) -> list[DomainRecord]:
    """The ``survivors`` that still look real after asking them again (order kept).

    Only names below a parent with a wildcard (``wildcards``, by parent; parents that inherit a
    zone's wildcard share its object) are checked; the others are kept as they are. In up to
    ``requeries`` rounds, every name still in doubt is asked once more; a name whose answers so far
    overlap its wildcard is dropped, and all it was answered with joins the wildcard (so each round
    knows more of a rotating pool). Of the names left, an address or CNAME target shared by
    ``crowd`` or more names below one wildcard joins it too. ``wildcards`` is extended in place.
    """
    observed = {
        r.domain: DomainRecord(r.domain, list(r.a), list(r.aaaa), list(r.cnames))
        for r in survivors
        if wildcards.get(parent_of(r.domain))
    }
    doubtful = list(observed)
    for _ in range(requeries):
        if not doubtful:
            break
        replies = await asyncio.gather(*(client.query(name, "A") for name in doubtful))
        for name, reply in zip(doubtful, replies, strict=True):
            if reply[0] == NOERROR:
                observed[name].absorb(reply, "A")
        for name in doubtful:
            wildcard = wildcards[parent_of(name)]
            if overlaps(wildcard, observed[name]):
                _learn(wildcard, observed[name])
        doubtful = [n for n in doubtful if not overlaps(wildcards[parent_of(n)], observed[n])]
    counts: Counter[tuple[int, bool, str]] = Counter()
    for name in doubtful:
        key = id(wildcards[parent_of(name)])
        counts.update((key, False, ip) for ip in set(observed[name].ips))
        counts.update((key, True, cname) for cname in set(observed[name].cnames))
    for name in doubtful:
        wildcard = wildcards[parent_of(name)]
        for is_cname, values in ((False, observed[name].ips), (True, observed[name].cnames)):
            crowded = {v for v in values if counts[(id(wildcard), is_cname, v)] >= crowd}
            (wildcard.cnames if is_cname else wildcard.ips).update(crowded)
    real = {n for n in doubtful if not overlaps(wildcards[parent_of(n)], observed[n])}
    return [r for r in survivors if r.domain not in observed or r.domain in real]
