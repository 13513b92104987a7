from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.annotations import Annotations
    from ..models.platform import Platform


T = TypeVar("T", bound="Descriptor")


@_attrs_define
class Descriptor:
    """A reference to content by its media type, digest and size.

    Attributes:
        media_type (str):
        digest (str): `<algorithm>:<hex>` of the content's bytes.
        size (int): The content's size in bytes.
        urls (list[str] | Unset):
        annotations (Annotations | Unset): Free-form string annotations (`org.opencontainers.image.title`, ...).
        platform (Platform | Unset): The platform an image of an index runs on.
        artifact_type (str | Unset):
    """

    media_type: str
    digest: str
    size: int
    urls: list[str] | Unset = UNSET
    annotations: Annotations | Unset = UNSET
    platform: Platform | Unset = UNSET
    artifact_type: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        media_type = self.media_type

        digest = self.digest

        size = self.size

        urls: list[str] | Unset = UNSET
        if not isinstance(self.urls, Unset):
            urls = self.urls

        annotations: dict[str, Any] | Unset = UNSET
        if not isinstance(self.annotations, Unset):
            annotations = self.annotations.to_dict()

        platform: dict[str, Any] | Unset = UNSET
        if not isinstance(self.platform, Unset):
            platform = self.platform.to_dict()

        artifact_type = self.artifact_type

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": size,
            }
        )
        if urls is not UNSET:
            field_dict["urls"] = urls
        if annotations is not UNSET:
            field_dict["annotations"] = annotations
        if platform is not UNSET:
            field_dict["platform"] = platform
        if artifact_type is not UNSET:
            field_dict["artifactType"] = artifact_type

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.annotations import Annotations  # noqa: PLC0415
        from ..models.platform import Platform  # noqa: PLC0415

        d = dict(src_dict)
        media_type = d.pop("mediaType")

        digest = d.pop("digest")

        size = d.pop("size")

        urls = cast(list[str], d.pop("urls", UNSET))

        _annotations = d.pop("annotations", UNSET)
        annotations: Annotations | Unset
        if isinstance(_annotations, Unset):
            annotations = UNSET
        else:
            annotations = Annotations.from_dict(_annotations)

        _platform = d.pop("platform", UNSET)
        platform: Platform | Unset
        if isinstance(_platform, Unset):
            platform = UNSET
        else:
            platform = Platform.from_dict(_platform)

        artifact_type = d.pop("artifactType", UNSET)

        descriptor = cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=urls,
            annotations=annotations,
            platform=platform,
            artifact_type=artifact_type,
        )

        descriptor.additional_properties = d
        return descriptor

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
