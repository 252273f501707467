"""factory_boy factories. Projects and keys go through their services, as in production."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from feedback.models import Prediction, Project
from feedback.services.projects import project_create


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return project_create(slug=kwargs["slug"], name=kwargs.get("name", ""))


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prediction

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"pred-{n}")
    model = "support-bot"
    model_version = "2026-11-01"
    input = factory.LazyAttribute(lambda o: {"message": f"question {o.external_id}"})
    output = factory.LazyAttribute(lambda o: {"reply": f"answer {o.external_id}"})
    label = "refund"
    confidence = 0.8
    segment = factory.LazyFunction(lambda: {"locale": "en-US", "device": "ios"})
    occurred_at = factory.Faker("date_time_this_year", tzinfo=__import__("datetime").UTC)
    content_hash = factory.Sequence(lambda n: f"{n:064d}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-123456")
