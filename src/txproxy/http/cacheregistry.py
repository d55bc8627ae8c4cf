# -*- test-case-name: tests.test_http_caching -*-
"""
Every route cache of a process, for the admin API's purge.

Kept apart from L{txproxy.http.caching} so that a configuration with no
cache never loads the cache's rules (L{txproxy.http.cache}): the service
holds a registry whether or not a route caches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from zope.interface import implementer

from txproxy.interfaces import ICachePurge

if TYPE_CHECKING:
    from txproxy.http.cache import CacheStore


@implementer(ICachePurge)
class CacheRegistry:
    """
    Every route cache of every HTTP listener, for the admin API's C{DELETE
    /cache}: listeners register theirs as they are configured, a reload
    included, and forget them as they stop.
    """

    def __init__(self) -> None:
        self._stores: dict[object, tuple[CacheStore, ...]] = {}

    def register(self, owner: object, stores: Iterable[CacheStore]) -> None:
        """
        Set the stores of C{owner} (a listener's factory), in place of those
        it registered before.
        """
        stores = tuple(stores)
        if stores:
            self._stores[owner] = stores
        else:
            self._stores.pop(owner, None)

    def forget(self, owner: object) -> None:
        """
        Drop the stores of C{owner}.
        """
        self._stores.pop(owner, None)

    @property
    def stores(self) -> tuple[CacheStore, ...]:
        """
        The stores registered, each once.
        """
        seen: dict[int, CacheStore] = {}
        for stores in self._stores.values():
            for store in stores:
                seen.setdefault(id(store), store)
        return tuple(seen.values())

    def purge_url(self, url: str) -> int:
        """
        Purge C{url} from every store; the count is the total.

        @raise LookupError: when no route caches.
        """
        return sum(store.purge_url(url) for store in self._checked())

    def purge_prefix(self, prefix: str) -> int:
        """
        Purge every URL starting with C{prefix} from every store; the count is the total.

        @raise LookupError: when no route caches.
        """
        return sum(store.purge_prefix(prefix) for store in self._checked())

    def _checked(self) -> tuple[CacheStore, ...]:
        stores = self.stores
        if not stores:
            raise LookupError("no route caches")
        return stores
