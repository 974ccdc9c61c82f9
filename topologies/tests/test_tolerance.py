"""The expected values calibration and the topology tests judge by."""
import dataclasses

import pytest

from topologies import profiles, tolerance


def prof(text):
    return profiles.parse_profile(text, "/x/t.toml", "t")


def test_bottleneck_only_delivers_the_rate_whatever_the_loss():
    # A hop's own loss acts before its queue: saturated, it still sends at
    # its rate, and nothing after it loses more.
    m = tolerance.PathModel(prof('rate = "4Mbit"\ndelay = "20ms"\n'
                                 'loss = "20%"\n'))
    assert m.hops == ["bottleneck"]
    assert m.delivered_rate_bps() == 4e6
    assert m.rate_bps() == 4e6


def test_later_hops_thin_the_delivered_rate():
    m = tolerance.PathModel(prof('rate = "10Mbit"\ndelay = "1ms"\n'
                                 'loss = "10%"\n'
                                 'applies = ["bottleneck", "access"]\n'
                                 '[right_to_left]\nrate = "2Mbit"\n'
                                 'loss = "5%"\n'))
    assert m.hops == ["access-l1", "bottleneck", "access-r1"]
    assert m.rate_bps() == 10e6
    assert m.delivered_rate_bps() == pytest.approx(10e6 * 0.9 * 0.9)
    assert m.delivered_rate_bps("right_to_left") == \
        pytest.approx(2e6 * 0.95 * 0.95)
    # a frame survives all three hops with 0.9^3
    assert m.loss() == pytest.approx(1 - 0.9 ** 3)


def test_delivered_rate_is_the_narrowest_point_after_later_losses():
    m = tolerance.PathModel(prof('rate = "10Mbit"\ndelay = "1ms"\n'
                                 'loss = "0%"\n'
                                 'applies = ["bottleneck", "access"]\n'))
    d = m.l2r[0]
    m.l2r = [dataclasses.replace(d, rate_bps=10_000_000, loss=0.1),
             dataclasses.replace(d, rate_bps=5_000_000, loss=0.2),
             dataclasses.replace(d, rate_bps=10_000_000, loss=0.1)]
    # hop 1: 10 x 0.8 x 0.9 = 7.2; hop 2: 5 x 0.9 = 4.5; hop 3: 10
    assert m.delivered_rate_bps() == pytest.approx(4.5e6)
    assert m.rate_bps() == 5e6
