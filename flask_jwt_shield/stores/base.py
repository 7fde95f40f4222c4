"""The store protocol: all server-side state of the shield, behind one interface.

Every backend passes the same contract suite (``tests/test_store_contract.py``). Methods
raise :class:`~flask_jwt_shield.errors.StoreError` when the backend cannot be reached; the
pipeline decides what that means (``JWT_SHIELD_FAIL_MODE``).
"""

from __future__ import annotations

import dataclasses
import secrets
import typing as t

RevocationKind = t.Literal["jti", "sid", "kid"]
#: What a status-list revocation names: one token, a session, a subject or a key.
StatusKind = t.Literal["jti", "sid", "sub", "kid"]
#: What presenting a refresh token meant (see :class:`Rotation`).
Outcome = t.Literal["rotated", "grace", "reused", "revoked", "expired", "unknown", "unclaimed"]


@dataclasses.dataclass(slots=True)
class Family:
    """A refresh family: one login session and the chain of refresh tokens it rotated."""

    sid: str
    sub: str
    created_at: float
    expires_at: float  # absolute: rotation never extends it
    last_used_at: float
    current_jti: str
    current_iat: float
    previous_jti: str | None = None
    rotated_at: float | None = None
    revoked: bool = False
    last_ip: str | None = None
    last_country: str | None = None
    claims: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    #: The key that signed the current refresh token (``None`` for families stored before
    #: it was recorded): a session whose key is revoked can no longer refresh.
    kid: str | None = None

    def live(self, now: float, idle_ttl: float) -> bool:
        return not self.revoked and now < self.expires_at and now < self.last_used_at + idle_ttl

    def ended_by(self, not_before: float | None, key_revoked: bool) -> bool:
        """Whether a revocation of the subject (at ``not_before``) or of the key that signed
        the current refresh token ends this family: it began before the subject was logged
        out everywhere, or its token's key is revoked."""
        return key_revoked or (not_before is not None and self.created_at <= not_before)

    def spend(
        self,
        jti: str,
        *,
        new_jti: str,
        new_iat: float,
        now: float,
        idle_ttl: float,
        grace: float,
        ip: str | None,
        country: str | None,
        not_before: float | None = None,
        key_revoked: bool = False,
        new_kid: str | None = None,
    ) -> Outcome:
        """Decide what presenting refresh token ``jti`` means, and update the family to match.

        Returns a :class:`Rotation` outcome other than ``"unknown"``. Every store calls this
        inside its own lock or transaction and then persists the family, so the rule is
        written once: a family ended by a revocation of its subject (``not_before``, read in
        the same transaction) or of its key (``key_revoked``) is revoked, so that no
        rotation commits after such a revocation; only the current token rotates; within
        ``grace`` seconds the immediate predecessor gets the current generation again (no
        second branch); anything else is reuse and revokes the family. ``new_kid`` is the
        key that will sign the new refresh token.
        """
        if self.revoked:
            return "revoked"
        if self.ended_by(not_before, key_revoked):
            self.revoked = True
            return "revoked"
        if not self.live(now, idle_ttl):
            return "expired"
        if jti == self.current_jti:
            self.previous_jti, self.rotated_at = jti, now
            self.current_jti, self.current_iat = new_jti, new_iat
            if new_kid is not None:
                self.kid = new_kid
            outcome: Outcome = "rotated"
        elif grace > 0 and jti == self.previous_jti and self.rotated_at is not None and now - self.rotated_at <= grace:
            outcome = "grace"
        else:
            self.revoked = True
            return "reused"
        self.last_used_at, self.last_ip = now, ip
        if country is not None:
            self.last_country = country
        return outcome


def status_candidates(size: int, count: int) -> list[int]:
    """``count`` indices drawn uniformly from ``range(size)`` (a CSPRNG): where a new token
    may go. Random, so that an index says nothing of when, or after whom, it was issued
    (the draft's privacy considerations); the store takes the first free one."""
    return [secrets.randbelow(size) for _ in range(count)]


@dataclasses.dataclass(frozen=True, slots=True)
class Use:
    """When and from where a refresh token was spent."""

    at: float
    ip: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of :meth:`Store.rotate`.

    ``outcome`` is one of ``"rotated"`` (the presented token was current and is now spent),
    ``"grace"`` (it was the immediate predecessor, within the grace period: re-issue the
    current one), ``"reused"`` (spent before: the family is now revoked), ``"revoked"``,
    ``"expired"`` or ``"unknown"``; or ``"unclaimed"``: the status-list claim that came
    with the rotation found no free index, and nothing was written.
    """

    outcome: Outcome
    family: Family | None = None
    first_use: Use | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StatusHolder:
    """The access token that holds a status-list index (draft-ietf-oauth-status-list).

    ``until``: the index is not given to another token before then (the token's expiry,
    plus the leeway and the list's ``ttl``, so that no relying party's cached copy still
    speaks for the old token). ``ends_at``: when the token's session ends by its absolute
    lifetime, if that comes first -- the token's bit is then set though nobody revoked it.
    """

    jti: str
    sub: str
    sid: str | None
    kid: str | None
    iat: float
    until: float
    ends_at: float | None = None

    def marked_by(self, kind: StatusKind, value: str, at: float | None) -> bool:
        """Whether a status-list revocation of ``kind`` ``value`` (a subject's: of the
        tokens issued at or before ``at``) covers this token."""
        if kind == "sub":
            return self.sub == value and at is not None and self.iat <= at
        return bool(getattr(self, kind) == value)


@dataclasses.dataclass(slots=True)
class StatusClaim:
    """A status-list claim (see :meth:`Store.status_claim`) that a store makes along with
    its own write, in the same transaction or round trip: :meth:`Store.create_family` and
    :meth:`Store.rotate` take one. The store fills in ``made`` (it made the claim) and
    ``idx`` (the index, ``None`` when none of ``candidates`` was free)."""

    holder: StatusHolder
    candidates: t.Sequence[int]
    now: float
    idx: int | None = None
    made: bool = False


class Store(t.Protocol):
    """What a backend implements. All times are epoch seconds (``time.time()``)."""

    def check(self, *, jti: str, sid: str | None, sub: str, kid: str, iat: float, now: float) -> str | None:
        """Return why the token is revoked (``"token"``, ``"family"``, ``"subject"``,
        ``"key"``) or ``None``. One round trip."""

    def revoke(self, kind: RevocationKind, value: str, until: float) -> None:
        """Revoke a ``jti``, ``sid`` or ``kid`` until ``until`` (then forget it)."""

    def is_revoked(self, kind: RevocationKind, value: str, *, now: float) -> bool:
        """Whether this ``jti``, ``sid`` or ``kid`` is revoked at ``now``, read from the store
        itself (never from a process's local view). For operators' pages, not the hot path."""

    def revoke_subject(self, sub: str, at: float, until: float) -> None:
        """Reject every token of ``sub`` with ``iat <= at``, until ``until``, and end every
        family of ``sub`` created at or before ``at``, in one atomic step."""

    def not_before(self, sub: str, now: float) -> float | None:
        """The instant set by :meth:`revoke_subject` for ``sub``, if any."""

    def create_family(
        self, family: Family, *, max_sessions: int, idle_ttl: float, until: float, status: StatusClaim | None = None
    ) -> list[str]:
        """Store a new family; revoke the subject's oldest live families beyond
        ``max_sessions`` (their ``sid`` revoked until ``until``) and return their ids.

        A family created at or before the subject's not-before instant (a login racing a
        :meth:`revoke_subject`) is stored revoked.

        ``status``: a claim for the family's first access token, made in the same
        transaction or round trip when the backend can (``status.made``); a failed claim
        leaves the family stored and ``made`` false, for the caller to claim apart."""

    def rotate(
        self,
        sid: str,
        jti: str,
        *,
        new_jti: str,
        new_iat: float,
        now: float,
        idle_ttl: float,
        grace: float,
        ip: str | None,
        country: str | None,
        until: float,
        kid: str | None = None,
        new_kid: str | None = None,
        status: StatusClaim | None = None,
    ) -> Rotation:
        """Spend refresh token ``jti`` (signed by key ``kid``) of family ``sid`` atomically
        (see :class:`Rotation`), the new one to be signed by ``new_kid``.

        Exclusive with :meth:`revoke_subject` and with revoking ``kid``: a rotation that
        commits after either is refused (``"revoked"``) and the family ends.

        ``status``: the new generation's status-list claim, made first, in the same
        transaction or round trip: if it fails (:class:`StoreError`) or finds no free index
        (``"unclaimed"``), the refresh token is left unspent."""

    def get_family(self, sid: str) -> Family | None:
        """The family ``sid``, live or not."""

    def revoke_family(self, sid: str, until: float) -> Family | None:
        """Mark family ``sid`` revoked and revoke its ``sid`` until ``until``."""

    def families(self, sub: str, *, now: float, idle_ttl: float) -> list[Family]:
        """The subject's live families, oldest first: those that can still refresh (not
        revoked, within their lifetimes, not ended by the subject's not-before instant nor
        by a revoked key)."""

    def get_profile(self, sub: str) -> dict[str, t.Any] | None:
        """Per-subject detector state (country history, last location)."""

    def put_profile(self, sub: str, profile: dict[str, t.Any]) -> None:
        """Replace the per-subject detector state."""

    def add_event(self, event: dict[str, t.Any], *, retention: int) -> None:
        """Append a security event; keep at most ``retention`` events."""

    def events(
        self,
        *,
        subject: str | None = None,
        jti: str | None = None,
        sid: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, t.Any]]:
        """Matching events, newest first."""

    def remember_once(self, namespace: str, key: str, until: float, *, now: float) -> bool:
        """Remember ``key`` in ``namespace`` until ``until``; ``True`` the first time,
        ``False`` while it is remembered (a replay). Atomic across every process that
        shares the store. One round trip.

        Bounded in time (an entry is forgotten after ``until``) and in size: a backend
        that must drop live entries to stay within its bound raises a per-namespace
        floor, and answers ``False`` for any key whose ``until`` is not after that floor,
        so a dropped key can never be accepted twice. (The DPoP replay cache: callers
        pass an ``until`` past which they refuse the key anyway.)
        """

    # -- the status list (draft-ietf-oauth-status-list); see flask_jwt_shield.statuslist --

    def status_claim(self, holder: StatusHolder, candidates: t.Sequence[int], *, now: float) -> int | None:
        """Give ``holder`` a status-list index, atomically across every process and host:
        the index it already holds (the same ``jti`` again: a re-issue within the reuse
        grace), else the first of ``candidates`` that no live token holds (its previous
        holder's ``until`` has passed), else ``None``. The index starts ``VALID``, or
        ``INVALID`` when a :meth:`status_mark` made before already covers ``holder``
        (a login racing a revocation). One round trip."""

    def status_mark(self, kind: StatusKind, value: str, *, at: float | None, until: float, now: float) -> int:
        """Set the bits of every live index whose holder ``kind`` ``value`` names (a
        subject's: issued at or before ``at``), and remember the mark until ``until`` so
        that an index claimed later for such a token starts ``INVALID``. Returns how many
        bits changed."""

    def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
        """The list's version and its byte array of ``size`` one-bit statuses (the draft's
        layout: index 0 is the least significant bit of byte 0), or ``None`` for the bytes
        when the version is still ``version``. First sets the bits of tokens whose session
        has reached its ``ends_at``. The version changes whenever a bit does."""

    def box_put(self, box: str, key: str, value: str, until: float, *, max_items: int, now: float) -> int:
        """Keep ``value`` under ``key`` in the ordered box ``box`` until ``until`` (a value
        already under ``key`` is replaced and moves to the end). Then, when the box holds
        more than ``max_items`` live items, drop the oldest; return how many live items
        were dropped so (expired ones are not counted). Atomic; one round trip.

        What outlives a process and is read in order by whoever asks next: the Shared
        Signals transmitter's streams and the SETs not yet delivered to each.
        """

    def box_items(self, box: str, *, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` live ``(key, value)`` items of ``box``, oldest first."""

    def box_delete(self, box: str, keys: t.Sequence[str]) -> int:
        """Delete these keys from ``box``; return how many were there."""

    def purge(self, now: float) -> int:
        """Drop expired entries; return how many."""

    def close(self) -> None:
        """Release connections."""
