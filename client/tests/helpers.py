"""What the tests share: fast options and a valid ride."""

from __future__ import annotations

from typing import Any

from xrides_client import Options

# Small delays everywhere, so the suite stays fast; the logic is the same as with the defaults.
FAST = Options(
    linger_s=0.01,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    poll_min_s=0.01,
    poll_max_s=0.05,
    timeout_s=5.0,
    max_attempts=5,
)


def ride(booking_id: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "booking_id": booking_id,
        "user_id": 22177,
        "vehicle_model_id": 28,
        "package_id": None,
        "travel_type_id": 2,
        "from_area_id": 83,
        "to_area_id": 448,
        "from_city_id": None,
        "to_city_id": None,
        "from_date": "1/1/2013 2:00:00",
        "to_date": None,
        "online_booking": 0,
        "mobile_site_booking": 0,
        "booking_created": "1/1/2013 1:39:00",
        "from_lat": 12.92415,
        "from_long": 77.67229,
        "to_lat": 12.92732,
        "to_long": 77.63575,
        "driver_id": 0,
    }
    return base | changes


# The prototype's CSV columns (no driver_id: the platform requires it, so the CLI tests add it).
HEADER = (
    "booking_id,user_id,vehicle_model_id,package_id,travel_type_id,from_area_id,to_area_id,from_city_id,"
    "to_city_id,from_date,to_date,online_booking,mobile_site_booking,booking_created,from_lat,from_long,"
    "to_lat,to_long,Car_Cancellation"
)
ROW = (
    "132512,22177,28,NULL,2,83,448,NULL,,1/1/2013 2:00,NULL,0,0,1/1/2013 1:39,"
    "12.92415,77.67229,12.92732,77.63575,0"
)
