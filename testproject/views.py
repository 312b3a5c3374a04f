from __future__ import annotations

from rest_framework import serializers, viewsets

from testproject.models import Item


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ["id", "name", "quantity"]


class ItemViewSet(viewsets.ModelViewSet):
    """Throttled by TierRateThrottle (REST_FRAMEWORK settings); category from the method."""

    queryset = Item.objects.all()
    serializer_class = ItemSerializer
