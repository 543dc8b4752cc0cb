"""factory_boy factories for the platform's models (rows only; rounds with real files come from `build_round`)."""

from __future__ import annotations

import factory
from audits.models import AttributionRun, ClientAttribution, Generation, TokenAttribution
from django.utils import timezone
from registry.models import Client, ClientUpdate, Federation, Round


class FederationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Federation

    slug = factory.Sequence(lambda n: f"fed-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    federation = factory.SubFactory(FederationFactory)
    client_id = factory.Sequence(lambda n: f"client-{n}")
    display_name = factory.LazyAttribute(lambda o: o.client_id)


class RoundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Round

    federation = factory.SubFactory(FederationFactory)
    number = factory.Sequence(lambda n: n)
    base_model = "tiny"
    kind = "weights"
    aggregation = "fedavg"
    manifest = factory.LazyAttribute(lambda o: {"format": "protoken-round/1", "round": o.number, "clients": []})
    global_sha256 = "0" * 64
    artifact_path = factory.LazyAttribute(lambda o: f"rounds/{o.federation.slug}/round-{o.number}")


class ClientUpdateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClientUpdate

    round = factory.SubFactory(RoundFactory)
    client = factory.SubFactory(ClientFactory, federation=factory.SelfAttribute("..round.federation"))
    num_examples = 10
    sha256 = "1" * 64
    path = factory.LazyAttribute(lambda o: f"clients/{o.client.client_id}")


class GenerationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Generation

    round = factory.SubFactory(RoundFactory)
    federation = factory.SelfAttribute("round.federation")
    source = Generation.Source.SUBMITTED
    prompt = "What is 2+2?"
    response = "4"


class AttributionRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AttributionRun

    generation = factory.SubFactory(GenerationFactory)
    federation = factory.SelfAttribute("generation.federation")
    round = factory.SelfAttribute("generation.round")
    method_version = "protoken/test"
    config = factory.LazyFunction(dict)
    config_hash = factory.Sequence(lambda n: f"{n:064x}")
    tracked_modules = factory.LazyFunction(list)
    snapshot_hashes = factory.LazyFunction(dict)
    client_ids = factory.LazyFunction(list)
    predicted_client = factory.SubFactory(ClientFactory, federation=factory.SelfAttribute("..federation"))
    num_tokens = 1


class ClientAttributionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClientAttribution

    run = factory.SubFactory(AttributionRunFactory)
    generation = factory.SelfAttribute("run.generation")
    federation = factory.SelfAttribute("run.federation")
    round = factory.SelfAttribute("run.round")
    client = factory.SubFactory(ClientFactory, federation=factory.SelfAttribute("..federation"))
    raw_score = 1.0
    share = 0.5
    rank = 1
    in_responsible_set = True
    created_at = factory.LazyFunction(timezone.now)


class TokenAttributionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TokenAttribution

    run = factory.SubFactory(AttributionRunFactory)
    position = factory.Sequence(lambda n: n)
    token_id = 42
    text = "x"
    top_client = factory.SelfAttribute("run.predicted_client")
    top_share = 0.9
    scores = factory.LazyFunction(lambda: [1.0])
