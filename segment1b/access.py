"""Whether a data root or an export target on an object store can be used at all (issue 15, item 1).

Without this check, missing credentials surface deep inside a run as a 27-frame botocore traceback.  One
listing before any work turns them into ``E_STORAGE_ACCESS``, naming the URL and what to give.  The errors
are recognised by class name, so this module needs no cloud SDK (botocore raises ``NoCredentialsError``,
``PartialCredentialsError`` and ``ProfileNotFound``; s3fs turns a refused key or signature into
``PermissionError``).
"""

from __future__ import annotations

import fsspec

from .errors import InputError

__all__ = ["check_access", "CREDENTIALS_HINT"]

_NO_CREDENTIALS = {"NoCredentialsError": "no credentials were found",
                   "PartialCredentialsError": "the credentials are incomplete",
                   "ProfileNotFound": "the profile given does not exist",
                   "CredentialRetrievalError": "the credentials could not be retrieved",
                   "NoAuthTokenError": "no credentials were found",
                   "DefaultCredentialsError": "no credentials were found"}  # the last: Google Cloud Storage

CREDENTIALS_HINT = ('give credentials in --storage-options, e.g. \'{"key": "ACCESS_KEY", "secret": "SECRET_KEY", '
                    '"client_kwargs": {"endpoint_url": "https://host:9000"}}\', or \'{"profile": "NAME", ...}\' '
                    "for a profile of ~/.aws/credentials, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(README, \"Running on a cluster\")")


def check_access(fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
    """List ``path`` once; raise ``E_STORAGE_ACCESS`` when the store cannot be used with these credentials.

    A path that does not exist yet (a new data root) is fine.  Local filesystems are not checked (their
    permission errors are ``E_PUBLISH_IO`` where a write fails).

    Raises
    ------
    InputError
        ``E_STORAGE_ACCESS`` naming ``url`` and the reason: no (or incomplete) credentials, an unknown
        profile, or credentials the store refuses.
    """
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "memory" in protocols:
        return
    try:
        fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    except Exception as exc:  # noqa: BLE001 - only the failures recognised below are translated
        reason = _reason(exc)
        if reason is None:
            raise
        raise InputError("E_STORAGE_ACCESS", f"cannot use {url}: {reason} ({type(exc).__name__}: {exc})",
                         path=url, hint=CREDENTIALS_HINT) from None


def _reason(exc: BaseException) -> str | None:
    for cls in type(exc).__mro__:
        if cls.__name__ in _NO_CREDENTIALS:
            return _NO_CREDENTIALS[cls.__name__]
    if isinstance(exc, PermissionError):
        return "the store refused the credentials (wrong key or secret, or no permission on this bucket)"
    return None
