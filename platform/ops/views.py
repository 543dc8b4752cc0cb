"""Liveness/readiness endpoint for load balancers and docker-compose health checks."""

from django.db import connection
from django.http import JsonResponse


def healthz(request):
    with connection.cursor() as cur:
        cur.execute("select 1")
        cur.fetchone()
    return JsonResponse({"status": "ok"})
