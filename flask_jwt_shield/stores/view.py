"""A process's local view of "this token is not revoked", for stores shared between processes.

The hot path asks the store about every request. When the store is shared (SQLite by the
workers of one host, Redis by many hosts), most answers are "not revoked" and stay so until
somebody revokes something. :class:`NotRevokedCache` remembers those answers per ``jti``,
each tagged with the *generation* of the view when the store was read. Any sign that the
shared state changed -- an invalidation message, a new value of the SQLite store's change
counter, this process's own write, a lost invalidation connection -- moves the generation
on, and every remembered answer from an older generation is ignored.

Why a remembered answer can never outlive a revocation it missed: the generation is read
*before* the store is asked. A revocation committed after that read moves the generation
on once its signal arrives, whether that happens before or after the answer is stored, and
the answer carries the older generation. The signal's own delay is each store's documented
bound.

Only "not revoked" answers are kept: a revocation only ever starts through a write (which
signals), while an entry that expires only turns "revoked" into "not revoked".
"""

from __future__ import annotations

import os
import threading
import weakref


class NotRevokedCache:
    """``jti`` -> the generation in which the store said "not revoked". Bounded, thread-safe."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: The last change signal passed to :meth:`observe` (constant within a generation).
        self.signal: object = None
        _VIEWS.add(self)

    def fresh(self, jti: str) -> bool:
        """True if ``jti`` was found not revoked in the current generation.

        Asks no process id (a system call per request): a forked child starts with nothing
        remembered (:func:`_forget_in_child`), and :meth:`reset_after_fork` still tells its
        store that the process is a new one.
        """
        return self._entries.get(jti) == self.generation

    def holds(self, jti: str, signal: object) -> bool:
        """True if ``jti`` was found not revoked in the current generation and ``signal``
        is the one observed last (:meth:`observe`).

        For a store whose signal is one value shared by every process (the SQLite store's
        change counter): an answer tied to it would stay valid in a forked child (which
        starts empty all the same).
        """
        return signal == self.signal and self._entries.get(jti) == self.generation

    def remember(self, jti: str, generation: int) -> None:
        """Record "not revoked" for ``jti`` as read in ``generation`` (read before asking)."""
        if generation != self.generation or self.max_entries <= 0:
            return  # already outdated: the store changed while it was being read
        entries = self._entries
        if len(entries) >= self.max_entries:
            with self._lock:
                if len(entries) >= self.max_entries:
                    entries.clear()  # cheaper than an LRU on the hot path; refilled on demand
        entries[jti] = generation

    def invalidate(self) -> None:
        """Forget every remembered answer (the shared state may have changed)."""
        with self._lock:
            self.generation += 1
            if len(self._entries) > self.max_entries // 2:
                self._entries = {}

    def observe(self, signal: object) -> int:
        """The generation to remember answers read after ``signal`` was read, for a store
        whose change signal is a value (the SQLite store's change counter): a value other
        than the last one observed starts a new generation.

        The signal changes only together with the generation, under the lock, so an answer
        remembered in a generation was read after that generation's signal.
        """
        with self._lock:
            if signal != self.signal:
                self.signal = signal
                self.generation += 1
                if len(self._entries) > self.max_entries // 2:
                    self._entries = {}
            return self.generation

    def reset_after_fork(self) -> bool:
        """In a forked child, start empty; True if this process is a new one."""
        pid = os.getpid()
        if pid == self._pid:
            return False
        self._lock = threading.Lock()
        self._entries = {}
        self.generation += 1
        self._pid = pid
        return True


#: Every live view of this process, emptied in a forked child.
_VIEWS: weakref.WeakSet[NotRevokedCache] = weakref.WeakSet()


def _forget_in_child() -> None:
    """After a fork, in the child: no view keeps the parent's answers (the parent's
    subscriber, which would have invalidated them, did not cross the fork) or its lock.

    The process id is left as it was, so :meth:`NotRevokedCache.reset_after_fork` still
    reports the new process to its store, which then restarts its subscriber. Without this
    hook (a server that forks in C without Python's at-fork hooks) a child would trust the
    parent's answers only while the parent's trust lease lasts: within the store's bound.
    """
    for view in list(_VIEWS):
        view._lock = threading.Lock()
        view._entries = {}
        view.generation += 1


os.register_at_fork(after_in_child=_forget_in_child)
