from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from testproject.models import Item


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ["id", "name", "quantity"]


class ItemViewSet(viewsets.ModelViewSet):
    """Throttled by TierRateThrottle (REST_FRAMEWORK settings); category from the method."""

    queryset = Item.objects.all()
    serializer_class = ItemSerializer


@extend_schema(parameters=[OpenApiParameter("q", str, description="Text the item's name contains.")])
class ItemSearchView(generics.ListAPIView):
    """Items whose name contains ``q``: counted in the ``search`` category, apart from ``read``."""

    serializer_class = ItemSerializer
    ratelimit_category = "search"

    def get_queryset(self) -> QuerySet[Item]:
        return Item.objects.filter(name__icontains=self.request.query_params.get("q", ""))


class ItemExportView(generics.ListAPIView):
    """Every item at once: an expensive request, it costs 10 in each rule it meets."""

    queryset = Item.objects.all()
    serializer_class = ItemSerializer
    ratelimit_cost = 10


class WhoAmISerializer(serializers.Serializer):
    account = serializers.CharField()
    prefix = serializers.CharField()


class WhoAmIView(generics.GenericAPIView):
    """The key's account and prefix, from the request alone: no query of its own."""

    serializer_class = WhoAmISerializer

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"account": str(request.user), "prefix": request.auth.prefix})


class UnthrottledWhoAmIView(WhoAmIView):
    """Not rate-limited: authentication alone checks that the key is usable."""

    throttle_classes = []
