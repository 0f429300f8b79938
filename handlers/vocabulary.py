"""Translated labels and icons for the station vocabulary (amenities, services, statuses, preset notices)."""

from __future__ import annotations

from bot.i18n import N_, Translator

# name -> (icon, label msgid). Order follows models.stations.AMENITIES.
AMENITY_LABELS: dict[str, tuple[str, str]] = {
    "hot_water": ("♨️", N_("Hot water")),
    "drinking_water": ("💧", N_("Drinking water")),
    "microwave": ("🍲", N_("Microwave")),
    "first_aid": ("🩹", N_("First aid")),
    "rest_area": ("🪑", N_("Seats to rest")),
    "toilet": ("🚻", N_("Toilet")),
    "phone_charging": ("🔌", N_("Phone charging")),
    "food_box": ("🍱", N_("Free food box")),
    "heating": ("🔥", N_("Heating")),
    "air_conditioning": ("❄️", N_("Air conditioning")),
    "wifi": ("📶", N_("Wi-Fi")),
    "shower": ("🚿", N_("Shower")),
    "lockers": ("🔐", N_("Lockers")),
    "residence_permit": ("🪪", N_("Residence permit applications")),
    "job_referral": ("💼", N_("Short-term job referral")),
    "legal_aid": ("⚖️", N_("Legal aid")),
    "medical_care": ("🩺", N_("Medical care")),
    "lodging": ("🛏️", N_("Lodging")),
}

# Shown under "Services" on a station card rather than "Amenities".
SERVICES = frozenset({"residence_permit", "job_referral", "legal_aid", "medical_care", "lodging"})

# The few filters offered as one-tap toggles under a result list.
QUICK_FILTERS: tuple[str, ...] = ("hot_water", "heating", "phone_charging", "toilet", "food_box")

ALERT_PRESETS: dict[str, str] = {
    "food_box_empty": N_("The food box is empty today."),
    "closed_today": N_("Closed today."),
}


def amenity_icon(name: str) -> str:
    return AMENITY_LABELS.get(name, ("•", name))[0]


def amenity_label(t: Translator, name: str) -> str:
    icon, label = AMENITY_LABELS.get(name, ("•", name))
    return f"{icon} {t.gettext(label)}"
