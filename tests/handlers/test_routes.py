"""The MQTT route table: matching, parameters, and one route per shape."""

import pytest

from handlers.routes import ROUTES, Route, Router, device_error, on_telemetry


def test_routes_match_with_parameters() -> None:
    router = Router(ROUTES)
    route, params = router.match("devices/dev1/telemetry") or (None, None)
    assert route is not None and route.pattern == "devices/+/telemetry" and params == ["dev1"]
    route, params = router.match("devices/dev1/commands/res/r42") or (None, None)
    assert route is not None and params == ["dev1", "r42"]
    assert router.match("devices/dev1/status") is None
    assert router.match("devices/dev1/telemetry/extra") is None
    assert router.match("provisioning/c1/claim") is not None


def test_two_routes_of_one_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="share a shape"):
        Router([Route("devices/+/x", on_telemetry, device_error), Route("devices/+/x", on_telemetry, device_error)])
