import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def test_probe(live_server):
    import urllib.request
    urllib.request.urlopen(live_server.url + "/login/").read()
    with connection.cursor() as cur:
        cur.execute("select pid, application_name, state, query from pg_stat_activity where datname = current_database()")
        print(cur.fetchall())
