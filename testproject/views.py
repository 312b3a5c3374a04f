from __future__ import annotations

from typing import Any

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
