from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.annotations import Annotations
    from ..models.descriptor import Descriptor


T = TypeVar("T", bound="ArtifactManifest")


@_attrs_define
class ArtifactManifest:
    """The OCI artifact manifest of image-spec 1.1's release candidates (`application/vnd.oci.artifact.manifest.v1+json`),
    which some registries (ACR among them) still serve: an artifact type and its blobs.

        Attributes:
            media_type (str):
            artifact_type (str):
            blobs (list[Descriptor] | Unset):
            subject (Descriptor | Unset): A reference to content by its media type, digest and size.
            annotations (Annotations | Unset): Free-form string annotations (`org.opencontainers.image.title`, ...).
    """

    media_type: str
    artifact_type: str
    blobs: list[Descriptor] | Unset = UNSET
    subject: Descriptor | Unset = UNSET
    annotations: Annotations | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        media_type = self.media_type

        artifact_type = self.artifact_type

        blobs: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.blobs, Unset):
            blobs = []
            for blobs_item_data in self.blobs:
                blobs_item = blobs_item_data.to_dict()
                blobs.append(blobs_item)

        subject: dict[str, Any] | Unset = UNSET
        if not isinstance(self.subject, Unset):
            subject = self.subject.to_dict()

        annotations: dict[str, Any] | Unset = UNSET
        if not isinstance(self.annotations, Unset):
            annotations = self.annotations.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "mediaType": media_type,
                "artifactType": artifact_type,
            }
        )
        if blobs is not UNSET:
            field_dict["blobs"] = blobs
        if subject is not UNSET:
            field_dict["subject"] = subject
        if annotations is not UNSET:
            field_dict["annotations"] = annotations

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.annotations import Annotations  # noqa: PLC0415
        from ..models.descriptor import Descriptor  # noqa: PLC0415

        d = dict(src_dict)
        media_type = d.pop("mediaType")

        artifact_type = d.pop("artifactType")

        _blobs = d.pop("blobs", UNSET)
        blobs: list[Descriptor] | Unset = UNSET
        if _blobs is not UNSET:
            blobs = []
            for blobs_item_data in _blobs:
                blobs_item = Descriptor.from_dict(blobs_item_data)

                blobs.append(blobs_item)

        _subject = d.pop("subject", UNSET)
        subject: Descriptor | Unset
        if isinstance(_subject, Unset):
            subject = UNSET
        else:
            subject = Descriptor.from_dict(_subject)

        _annotations = d.pop("annotations", UNSET)
        annotations: Annotations | Unset
        if isinstance(_annotations, Unset):
            annotations = UNSET
        else:
            annotations = Annotations.from_dict(_annotations)

        artifact_manifest = cls(
            media_type=media_type,
            artifact_type=artifact_type,
            blobs=blobs,
            subject=subject,
            annotations=annotations,
        )

        artifact_manifest.additional_properties = d
        return artifact_manifest

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
