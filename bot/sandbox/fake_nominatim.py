"""A local stand-in for Nominatim's /search API (the demo and the tests; no internet needed).

Answers like the real service: a JSON array of places with lat/lon as strings and a display_name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web


@dataclass
class FakePlace:
    lat: float
    lon: float
    display_name: str


DEFAULT_PLACES: dict[str, FakePlace] = {
    "湖塘镇": FakePlace(31.7035, 119.9719, "湖塘镇, 武进区, 常州市, 江苏省, 中国"),
    "hutang": FakePlace(31.7035, 119.9719, "Hutang, Wujin District, Changzhou, Jiangsu, China"),
    "常州火车站": FakePlace(31.7865, 119.9722, "常州站, 天宁区, 常州市, 江苏省, 中国"),
    "changzhou railway station": FakePlace(31.7865, 119.9722, "Changzhou Railway Station, Changzhou, China"),
    "萨尔图": FakePlace(46.6247, 125.1080, "萨尔图区, 大庆市, 黑龙江省, 中国"),
    "daqing railway station": FakePlace(46.6133, 125.0958, "Daqing Railway Station, Daqing, China"),
}


@dataclass
class FakeNominatim:
    places: dict[str, FakePlace] = field(default_factory=lambda: dict(DEFAULT_PLACES))
    fail_next: int = 0  # answer this many requests with 503 (provider outage)
    requests: list[tuple[float, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/search", self._search)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeNominatim:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        self.requests.append((time.monotonic(), query))
        if not request.headers.get("User-Agent"):
            return web.json_response({"error": "user agent required"}, status=403)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="Service Unavailable")
        wanted = " ".join(query.casefold().split())
        hits = [place for name, place in self.places.items() if name.casefold() in wanted or wanted in name.casefold()]
        limit = int(request.query.get("limit", "10") or 10)
        body = [
            {
                "place_id": 1000 + i,
                "licence": "Data © OpenStreetMap contributors, ODbL 1.0. https://osm.org/copyright",
                "lat": f"{place.lat:.7f}",
                "lon": f"{place.lon:.7f}",
                "display_name": place.display_name,
                "class": "place",
                "type": "town",
                "importance": 0.5,
                "boundingbox": [
                    f"{place.lat - 0.01:.7f}",
                    f"{place.lat + 0.01:.7f}",
                    f"{place.lon - 0.01:.7f}",
                    f"{place.lon + 0.01:.7f}",
                ],
            }
            for i, place in enumerate(hits[:limit])
        ]
        return web.json_response(body)
