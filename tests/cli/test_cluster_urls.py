"""A ``redis+cluster://`` URL the CLI cannot use is hinted with a cluster URL, not a
``redis://`` one (which would send the user to a single server)."""

import pytest
from cli_helpers import assert_one_line, run_cli
from test_errors import url_args

from greenredis.cli.failures import Fatal, check_url, probe
from greenredis.server import free_port

BAD_CLUSTER_URLS = [  # (URL, what the line says)
    ("redis+cluster://", "empty host"),
    ("redis+cluster://:hunter22@127.0.0.1:notaport", "bad host:port"),
    ("redis+cluster://127.0.0.1:7000/2", "only db 0"),
    ("redis+cluster://127.0.0.1:7000?nosuch=1", "unknown URL option 'nosuch'"),
    ("redis+cluster://127.0.0.1:99999", "bad host:port '127.0.0.1:99999'"),
]


@pytest.mark.parametrize("url, why", BAD_CLUSTER_URLS)
def test_a_bad_cluster_url_is_hinted_with_a_cluster_url(url, why):
    with pytest.raises(Fatal) as e:
        check_url(url)
    assert why in e.value.message and e.value.code == 2
    assert "redis+cluster://" in e.value.hint and "redis://" not in e.value.hint
    assert "hunter22" not in e.value.message + e.value.hint


def test_an_unreachable_cluster_is_hinted_with_a_cluster_url():
    port = free_port()
    with pytest.raises(Fatal) as e:
        probe(f"redis+cluster://127.0.0.1:{port}", timeout=1)
    assert str(port) in e.value.message
    assert "redis+cluster://" in e.value.hint and "redis://" not in e.value.hint


def test_the_cli_hints_a_cluster_url():
    argv, env = url_args("nodes", "redis+cluster://127.0.0.1:notaport")
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, "nodes", "bad Redis URL", "bad host:port", exit_code=2)
    assert "hint: " in err and "redis+cluster://" in err.splitlines()[1] and "redis://" not in err
