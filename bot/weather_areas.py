"""The configured cold-weather areas (`weather.areas` in the settings) as domain objects, built once per settings."""

from __future__ import annotations

from bot.config import Settings, WeatherSettings
from models import weather
from models.weather import Area, Trigger

_areas_cache: dict[int, tuple[WeatherSettings, dict[str, Area]]] = {}


def configured_areas(settings: Settings) -> dict[str, Area]:
    """The configured areas as domain objects, by key (built once per settings object)."""
    cached = _areas_cache.get(id(settings.weather))
    if cached is not None and cached[0] is settings.weather:
        return cached[1]
    areas: dict[str, Area] = {}
    for conf in settings.weather.areas:
        trigger_conf = conf.trigger or settings.weather.trigger
        trigger = Trigger(
            min_temperature_c=trigger_conf.min_temperature_c,
            apparent_temperature_c=trigger_conf.apparent_temperature_c,
            snowfall_cm=trigger_conf.snowfall_cm,
            min_hours=trigger_conf.min_hours,
            hysteresis_c=trigger_conf.hysteresis_c,
            clear_hours=trigger_conf.clear_hours,
        )
        polygon = tuple((float(lat), float(lon)) for lat, lon in conf.polygon)
        if conf.lat is not None and conf.lon is not None:
            lat, lon = conf.lat, conf.lon
        else:
            lat, lon = weather.polygon_centre(polygon)
        areas[conf.key] = Area(
            key=conf.key,
            name=conf.name,
            lat=lat,
            lon=lon,
            timezone=conf.timezone or settings.timezone,
            trigger=trigger,
            names=dict(conf.names),
            polygon=polygon,
        )
    _areas_cache[id(settings.weather)] = (settings.weather, areas)
    return areas
