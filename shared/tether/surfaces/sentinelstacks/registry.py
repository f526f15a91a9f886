"""SentinelStacks' images and registry routes: the document's `/v1/images` and `/v1/registry`,
and the package paths its registry clients use (internal/registry/client/registry_client.go:
`Client` under `/api/v1/packages`, `RegistryClient` under `/v1/packages`).

An image is a package (a gzipped tar of a Sentinelfile, its files and `sentinel.manifest.json`)
named by the sha256 of its bytes; tags move, digests never change (tether.service.images).
"""

from __future__ import annotations

import base64
import binascii

from werkzeug.wrappers import Request, Response

from tether import bootstrap, errors
from tether.core.images import digest_of
from tether.service.images import ImageView
from tether.surfaces.http import caller, iso, json_response
from tether.surfaces.sentinelstacks import models as m
from tether.surfaces.sentinelstacks.routes import found, router

PACKAGE = "application/gzip"


def image_json(view: ImageView) -> m.Image:
    return m.Image(
        id=view.digest, name=view.name, tag=view.tag, ref=view.ref, description=view.description,
        created_at=iso(view.created_at) or "", size=view.size, base_model=view.base_model,
        llm=view.base_model, features=view.capabilities, capabilities=view.capabilities,
        tools=view.tools, parameters=view.parameters, author=view.author,
        metadata=m.ImageMetadata(author=view.author, version=view.version,
                                 template=view.template),
    )  # fmt: skip


# -- images -----------------------------------------------------------------------------------


@router.route("/v1/images", ["GET"], query=m.ImagesQuery, answers={200: m.Images})
def list_images(request: Request, query: m.ImagesQuery) -> Response:
    """The caller's images (pushed or pulled), newest first."""
    images = bootstrap.services().images
    page = images.list_images(caller(request), query.limit, query.cursor)
    return json_response(m.Images(images=[image_json(v) for v in page.items],
                                  next_cursor=page.next_cursor))  # fmt: skip


@router.route("/v1/images/<path:image_id>", ["GET"], answers={200: m.Image}, errors=(404,))
def get_image(request: Request, image_id: str) -> Response:
    """One of the caller's images, by digest (`sha256:...`), `name:tag` or `name`."""
    images, who = bootstrap.services().images, caller(request)
    return json_response(image_json(found(image_id, lambda: images.get_image(who, image_id))))


# -- the document's registry ------------------------------------------------------------------


def _terms(query: m.SearchQuery) -> str:
    words = [query.query or query.q or ""]
    words += [t for t in (query.tags or "").split(",") if t.strip()]
    return " ".join(w.strip() for w in words if w.strip())


@router.route("/v1/registry/search", ["GET"], query=m.SearchQuery,
              answers={200: m.SearchResults})  # fmt: skip
def search(request: Request, query: m.SearchQuery) -> Response:
    """Images in the registry whose name, tag, description, capabilities or tools hold every
    word of `query` (and of `tags`), newest first."""
    caller(request)
    found, total = bootstrap.services().images.search(_terms(query), query.limit, query.offset)
    return json_response(m.SearchResults(results=[image_json(v) for v in found], total=total,
                                         offset=query.offset, limit=query.limit))  # fmt: skip


def _decoded(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise errors.Invalid("`file` must be base64", field="file") from None


@router.route("/v1/registry/push", ["POST"], body=m.Push, answers={200: m.Pushed},
              errors=(403, 404, 413))  # fmt: skip
def push(request: Request, body: m.Push) -> Response:
    """Upload an image (`file`: its package, or a bare Sentinelfile, base64), or tag one the
    caller has (`image_id` and `tag`)."""
    images, who = bootstrap.services().images, caller(request)
    if body.file is None:
        if not body.image_id or not body.tag:
            raise errors.Invalid("Send `file` (base64), or `image_id` and `tag`", field="file")
        view = images.retag(who, body.image_id, body.tag, body.name)
        return json_response(m.Pushed(id=view.digest, name=view.name, tag=view.tag,
                                      status="tagged", message="Image tagged",
                                      image=image_json(view)))  # fmt: skip
    data = _decoded(body.file)
    stated = body.digest or (body.id if body.id and body.id.startswith("sha256:") else None)
    if stated is not None and stated != digest_of(data):
        raise errors.Invalid(f"The package's digest is {digest_of(data)}, not {stated}",
                             field="digest")  # fmt: skip
    result = images.push(who, data, body.tag, body.name)
    view = images.get_image(who, f"{result.name}:{result.tag}")
    status = "pushed" if result.created else "unchanged"
    message = "Image pushed successfully" if result.created else "The registry had it already"
    return json_response(m.Pushed(id=result.digest, name=result.name, tag=result.tag,
                                  status=status, message=message,
                                  image=image_json(view)))  # fmt: skip


@router.route("/v1/registry/pull", ["POST"], body=m.Pull, answers={200: m.Pulled}, errors=(404,))
def pull(request: Request, body: m.Pull) -> Response:
    """Bring an image from the registry into the caller's images."""
    view = bootstrap.services().images.pull(caller(request), body.name, body.tag or "latest")
    return json_response(m.Pulled(id=view.digest, name=view.name, tag=view.tag,
                                  message="Image pulled successfully",
                                  image=image_json(view)))  # fmt: skip


# -- the registry clients' package paths ------------------------------------------------------


def _package(request: Request) -> bytes:
    """The `package` part of a multipart body (both registry clients upload so)."""
    part = request.files.get("package")
    if part is None:
        raise errors.Invalid("Send the package as multipart/form-data, in a part named "
                             "'package'", field="package")  # fmt: skip
    return bytes(part.read())


def _published(request: Request) -> Response:
    result = bootstrap.services().images.push(caller(request), _package(request))
    status = "pushed" if result.created else "unchanged"
    return json_response(m.Published(name=result.name, version=result.tag, digest=result.digest,
                                     size=result.size, status=status), 201)  # fmt: skip


@router.route("/api/v1/packages/upload", ["POST"], answers={201: m.Published},
              errors=(403, 413), upload="package")  # fmt: skip
def upload_package(request: Request) -> Response:
    """Publish a package (`Client.Push`)."""
    return _published(request)


@router.route("/v1/packages/publish", ["POST"], answers={201: m.Published},
              errors=(403, 413), upload="package")  # fmt: skip
def publish_package(request: Request) -> Response:
    """Publish a package (`RegistryClient.PushPackage`)."""
    return _published(request)


def _summaries(query: m.SearchQuery) -> list[m.PackageSummary]:
    images = bootstrap.services().images
    found, _ = images.search(_terms(query), query.limit, query.offset)
    return [m.PackageSummary(name=v.name, version=v.tag, description=v.description,
                             author=v.author, createdAt=iso(v.created_at) or "",
                             tags=v.capabilities) for v in found]  # fmt: skip


def _search(request: Request, query: m.SearchQuery) -> Response:
    caller(request)
    found = _summaries(query) if query.type in (None, "", "agent") else []
    return json_response(m.PackageSearch(results=found, total=len(found), items=found,
                                         totalCount=len(found)))  # fmt: skip


@router.route("/api/v1/packages/search", ["GET"], query=m.SearchQuery,
              answers={200: m.PackageSearch})  # fmt: skip
def search_packages(request: Request, query: m.SearchQuery) -> Response:
    """Search the registry (`Client.Search` reads `results` and `total`)."""
    return _search(request, query)


@router.route("/v1/packages/search", ["GET"], query=m.SearchQuery,
              answers={200: m.PackageSearch})  # fmt: skip
def search_packages_v1(request: Request, query: m.SearchQuery) -> Response:
    """Search the registry (`RegistryClient.SearchPackages` reads `items` and `totalCount`)."""
    return _search(request, query)


def _download(request: Request, name: str, version: str) -> Response:
    caller(request)
    images = bootstrap.services().images
    view, data = found(name, lambda: images.artifact(name, version))
    filename = f"{view.name.replace('/', '-')}-{view.tag}.sentinel-pkg"
    return Response(data, mimetype=PACKAGE, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-Digest": view.digest,
    })  # fmt: skip


@router.route("/api/v1/packages/<path:name>/<version>/download", ["GET"], answers={200: None},
              errors=(404,), media=PACKAGE)  # fmt: skip
def download_package(request: Request, name: str, version: str) -> Response:
    """A package's bytes (`Client.Pull`)."""
    return _download(request, name, version)


@router.route("/v1/packages/<path:name>/<version>", ["GET"], answers={200: None},
              errors=(404,), media=PACKAGE)  # fmt: skip
def pull_package(request: Request, name: str, version: str) -> Response:
    """A package's bytes (`RegistryClient.PullPackage`; its `?type=` is ignored)."""
    return _download(request, name, version)


@router.route("/api/v1/packages/<path:name>/tags", ["GET"], answers={200: m.Tags},
              errors=(404,))  # fmt: skip
def package_tags(request: Request, name: str) -> Response:
    """A package's tags (`Client.ListTags`)."""
    caller(request)
    images = bootstrap.services().images
    return json_response(m.Tags(tags=found(name, lambda: images.tags(name))))


@router.route("/v1/packages/<path:name>/versions", ["GET"], answers={200: None},
              errors=(404,))  # fmt: skip
def package_versions(request: Request, name: str) -> Response:
    """A package's tags, as an array (`RegistryClient.GetPackageVersions`)."""
    caller(request)
    images = bootstrap.services().images
    return json_response(found(name, lambda: images.tags(name)))


@router.route("/api/v1/packages/<path:name>/<version>", ["GET"], answers={200: m.PackageInfo},
              errors=(404,))  # fmt: skip
def package_info(request: Request, name: str, version: str) -> Response:
    """What a package holds (`Client.GetPackageInfo`)."""
    caller(request)
    images = bootstrap.services().images
    view, _ = found(name, lambda: images.artifact(name, version))
    when = iso(view.created_at) or ""
    return json_response(m.PackageInfo(
        name=view.name, version=view.tag, description=view.description, author=view.author,
        createdAt=when, updatedAt=iso(view.updated_at) or when, size=view.size,
        digest=view.digest, tags=images.tags(view.name),
        metadata={"base_model": view.base_model, "tools": view.tools,
                  "capabilities": view.capabilities, "template": view.template},
    ))  # fmt: skip
