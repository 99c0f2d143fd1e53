"""DICOM import jobs from S3: StartDICOMImportJob, GetDICOMImportJob, ListDICOMImportJobs.

What the developer guide's "Understanding import jobs" page says, and what the emulator does:

* The job reads every object under ``inputS3Uri`` (through boto3: ``--s3-endpoint`` or the
  standard ``AWS_ENDPOINT_URL_S3``, so moto's server or any S3 works). A file that is not a
  DICOM P10 object, or lacks a UID, is a line in ``failure.ndjson``, not a failed job.
* Results go under ``outputS3Uri`` + ``<datastoreId>-DicomImport-<jobId>/``:
  ``job-output-manifest.json`` (``jobSummary`` with counts and ``imageSetsSummary``),
  ``SUCCESS/success.ndjson`` (``inputFile`` + ``importResponse``) and
  ``FAILURE/failure.ndjson`` (``inputFile`` + ``exception``).
* ``SUBMITTED`` → ``IN_PROGRESS`` → ``COMPLETED`` (also when some files failed: the job status
  is about the job, the manifests about the files) or ``FAILED`` (the input or output could not
  be reached), each with an EventBridge event; ``submittedAt`` / ``endedAt`` are set.
* Instances are grouped as the seeding groups them (one image set per study, its series
  inside). A group becomes part of the study's existing *primary* image set when its Patient,
  Study and (shared) Series elements agree with it — a new version; an instance imported again
  overwrites the stored one — and otherwise a new *non-primary* image set (``isPrimary:
  false`` in the event and in success.ndjson). With no primary image set for the study yet, it
  becomes a new primary image set.

The S3 work runs on a background thread per job and never holds the backend lock while it
talks to S3; only the image-set changes are made under the lock. Logs name job ids, counts and
error codes — never a file's content or a metadata value.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable

from . import dicom_seed
from .core import Call, conflict, not_found
from .entities import ACTIVE, LOCKED, ImageSet, Version, with_ids
from .paging import fingerprint, paginate
from .protocol import validation
from .rules import sanitise_message

log = logging.getLogger("reconciler.emulator.imports")
TERMINAL = ("COMPLETED", "FAILED")


@dataclass
class ImportJob:
    jobId: str
    jobName: str
    jobStatus: str
    datastoreId: str
    dataAccessRoleArn: str
    inputS3Uri: str
    outputS3Uri: str                 # what the caller gave
    submittedAt: float
    clientToken: str | None = None
    endedAt: float | None = None
    message: str | None = None
    jobOutputS3Uri: str | None = None   # the job's own folder under outputS3Uri

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def reported_output(self, mode: str) -> str:
        return self.jobOutputS3Uri if mode == "job_folder" and self.jobOutputS3Uri \
            else self.outputS3Uri

    def properties(self, mode: str) -> dict[str, Any]:
        return {"jobId": self.jobId, "jobName": self.jobName, "jobStatus": self.jobStatus,
                "datastoreId": self.datastoreId, "dataAccessRoleArn": self.dataAccessRoleArn,
                "endedAt": self.endedAt, "submittedAt": self.submittedAt,
                "inputS3Uri": self.inputS3Uri, "outputS3Uri": self.reported_output(mode),
                "message": self.message}

    def summary(self) -> dict[str, Any]:
        return {"jobId": self.jobId, "jobName": self.jobName, "jobStatus": self.jobStatus,
                "datastoreId": self.datastoreId, "dataAccessRoleArn": self.dataAccessRoleArn,
                "endedAt": self.endedAt, "submittedAt": self.submittedAt,
                "message": self.message}


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix


def default_s3_client(endpoint_url: str | None, region: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    kwargs: dict[str, Any] = {}
    if session.get_credentials() is None:         # any credentials do for moto
        kwargs = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return session.client("s3", endpoint_url=endpoint_url, region_name=region,
                          config=Config(retries={"max_attempts": 3, "mode": "standard"}),
                          **kwargs)


class ImportsMixin:
    jobs: dict[str, ImportJob]
    s3_client_factory: Callable[[], Any] | None = None
    # How a submitted job runs: on a thread (the default) or inline (tests may replace it).
    import_runner: Callable[[str], None] | None = None

    # ------------------------------------------------------------------- operations
    def start_dicom_import_job(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            ds = self._datastore(p["datastoreId"])
            if ds.status != ACTIVE:
                raise conflict(f"Datastore {ds.datastore_id} is not ACTIVE")
            if p.get("importConfiguration"):
                raise validation("importConfiguration (DICOM JSON metadata imports) is not "
                                 "supported by the local emulator")
            token = p.get("clientToken")
            for job in self.jobs.values():
                if token and job.clientToken == token and job.datastoreId == ds.datastore_id:
                    return self._start_output(job)
            job_id = self.new_id()
            output = p["outputS3Uri"] if p["outputS3Uri"].endswith("/") \
                else p["outputS3Uri"] + "/"
            job = ImportJob(job_id, p.get("jobName") or job_id, "SUBMITTED", ds.datastore_id,
                            p["dataAccessRoleArn"], p["inputS3Uri"], p["outputS3Uri"],
                            self.clock(), token,
                            jobOutputS3Uri=f"{output}{ds.datastore_id}-DicomImport-{job_id}/")
            self.jobs[job_id] = job
            self.store.save_job(job)
            self._job_event(job)
            answer = self._start_output(job)
        (self.import_runner or self._run_on_thread)(job_id)
        return answer

    @staticmethod
    def _start_output(job: ImportJob) -> dict[str, Any]:
        return {"datastoreId": job.datastoreId, "jobId": job.jobId,
                "jobStatus": job.jobStatus, "submittedAt": job.submittedAt}

    def get_dicom_import_job(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            self._datastore(p["datastoreId"], for_image_sets=False)
            job = self.jobs.get(p["jobId"])
            if job is None or job.datastoreId != p["datastoreId"]:
                raise not_found(f"Import job {p['jobId']} does not exist")
            return {"jobProperties": job.properties(self.behaviours.import_output_uri)}

    def list_dicom_import_jobs(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            ds = self._datastore(p["datastoreId"], for_image_sets=False)
            status = p.get("jobStatus")
            jobs = sorted((j for j in self.jobs.values() if j.datastoreId == ds.datastore_id
                           and (status is None or j.jobStatus == status)),
                          key=lambda j: (-j.submittedAt, j.jobId))
            page, token = paginate(jobs, p.get("maxResults"), p.get("nextToken"),
                                   fingerprint("jobs", ds.datastore_id, status),
                                   self.behaviours.default_page_size)
            return {"jobSummaries": [j.summary() for j in page], "nextToken": token}

    # ----------------------------------------------------------------------- running
    def _run_on_thread(self, job_id: str) -> None:
        threading.Thread(target=self.run_import_job, args=(job_id,),
                         name=f"import-{job_id[:8]}", daemon=True).start()

    def _job_event(self, job: ImportJob) -> None:
        props = job.properties(self.behaviours.import_output_uri)
        at = job.endedAt if job.jobStatus in TERMINAL and job.endedAt else self.clock()
        self.events.job(props, at)

    def _set_job(self, job: ImportJob, status: str, message: str | None = None) -> None:
        job.jobStatus = status
        if status in TERMINAL:
            job.endedAt = self.clock()
        if message:
            job.message = sanitise_message(message)
        self.store.save_job(job)
        self._job_event(job)

    def run_import_job(self, job_id: str) -> None:
        """Do one job from start to end (called on the job's thread)."""
        with self.lock:
            job = self.jobs[job_id]
            self._set_job(job, "IN_PROGRESS")
        try:
            s3 = self.s3_client_factory() if self.s3_client_factory else \
                default_s3_client(None, self.events.region)
            parsed, failures, scanned = self._read_input(s3, job)
        except Exception as exc:  # noqa: BLE001 - any S3 or network failure ends the job
            self._fail_job(job, f"Cannot read the input {type(exc).__name__}: "
                                f"{_error_code(exc)}")
            return
        with self.lock:
            imported = self._import_instances(job, parsed)
        try:
            self._write_output(s3, job, imported, failures, scanned)
        except Exception as exc:  # noqa: BLE001
            self._fail_job(job, f"Cannot write the output {type(exc).__name__}: "
                                f"{_error_code(exc)}")
            return
        with self.lock:
            self._set_job(job, "COMPLETED")
        log.info("import job %s: %d file(s) scanned, %d imported, %d failed", job.jobId,
                 scanned, len(parsed), len(failures))

    def _fail_job(self, job: ImportJob, message: str) -> None:
        log.warning("import job %s failed: %s", job.jobId, message)
        with self.lock:
            self._set_job(job, "FAILED", message)

    def _read_input(self, s3: Any, job: ImportJob):
        bucket, prefix = split_s3(job.inputS3Uri)
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        parsed, failures = [], []
        for key in keys:
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            instance, why = dicom_seed.parse_p10(data)
            if instance is None:
                failures.append({"inputFile": key, "exception": {
                    "exceptionType": "ValidationException", "message": why}})
            else:
                parsed.append((key, instance))
        return parsed, failures, len(keys)

    def _import_instances(self, job: ImportJob, parsed: list) -> dict[str, Any]:
        """Image sets for the parsed instances (under the lock): per-file results + summary."""
        storage_keys = self.behaviours.instance_storage_keys == "on"
        groups: dict[str, list] = {}
        for key, instance in parsed:
            groups.setdefault(instance.study_uid, []).append((key, instance))
        successes, summaries = [], []
        for study_uid, members in groups.items():
            document = dicom_seed.assemble([i for _, i in members], storage_keys)
            image_set, version = self._place(job.datastoreId, study_uid, document)
            for key, _ in members:
                successes.append({"inputFile": key, "importResponse": {
                    "imageSetId": image_set.image_set_id,
                    "imageSetVersion": version.version_id, "isPrimary": image_set.is_primary}})
            summaries.append({"imageSetId": image_set.image_set_id,
                              "imageSetVersion": version.version_id,
                              "isPrimary": image_set.is_primary,
                              "numberOfMatchedSOPInstances": len(members)})
        return {"successes": successes, "summaries": summaries}

    def _place(self, datastore_id: str, study_uid: str, document: dict[str, Any]
               ) -> tuple[ImageSet, Version]:
        primary = self._study_primary(datastore_id, study_uid)
        now = self.clock()
        if primary is not None and not _locked(primary) \
                and not _conflicts(primary.latest.metadata, document):
            merged = _merge(primary.latest.metadata, document)
            version = Version(len(primary.versions) + 1,
                              with_ids(merged, datastore_id, primary.image_set_id), ACTIVE,
                              "IMPORTED", primary.created_at, now)
            primary.versions.append(version)
            self._save_image_set(primary, [version])
            merge_event = self.behaviours.import_merge_event
            self.events.image_set(datastore_id, primary.image_set_id, version.version_id, True,
                                  ACTIVE, "UPDATED" if merge_event == "updated" else "CREATED",
                                  now)
            return primary, version
        image_set = ImageSet(self.new_id(), datastore_id, now, is_primary=primary is None)
        version = Version(1, with_ids(document, datastore_id, image_set.image_set_id), ACTIVE,
                          "IMPORTED", now, now)
        image_set.versions.append(version)
        self.image_sets[image_set.image_set_id] = image_set
        self._save_image_set(image_set)
        self.events.image_set(datastore_id, image_set.image_set_id, 1, image_set.is_primary,
                              ACTIVE, "CREATED", now)
        return image_set, version

    def _study_primary(self, datastore_id: str, study_uid: str) -> ImageSet | None:
        """The study's primary image set (the oldest, should there be several); a LOCKED one
        counts as a conflict: the import does not write into an image set being changed."""
        found = self.study_image_sets(datastore_id, study_uid)
        if not found:
            return None
        return found[0]

    def _write_output(self, s3: Any, job: ImportJob, imported: dict[str, Any],
                      failures: list, scanned: int) -> None:
        folder = job.jobOutputS3Uri or job.outputS3Uri
        bucket, prefix = split_s3(folder)
        summary = {
            "jobId": job.jobId, "datastoreId": job.datastoreId, "inputS3Uri": job.inputS3Uri,
            "outputS3Uri": folder, "successOutputS3Uri": f"{folder}SUCCESS/",
            "failureOutputS3Uri": f"{folder}FAILURE/",
            "numberOfScannedFiles": scanned,
            "numberOfImportedFiles": len(imported["successes"]),
            "numberOfFilesWithCustomerError": len(failures),
            "numberOfFilesWithServerError": 0,
            "numberOfGeneratedImageSets": len(imported["summaries"]),
            "imageSetsSummary": imported["summaries"],
        }

        def ndjson(rows: list) -> bytes:
            return "".join(json.dumps(r) + "\n" for r in rows).encode()

        s3.put_object(Bucket=bucket, Key=f"{prefix}SUCCESS/success.ndjson",
                      Body=ndjson(imported["successes"]), ContentType="application/x-ndjson")
        s3.put_object(Bucket=bucket, Key=f"{prefix}FAILURE/failure.ndjson",
                      Body=ndjson(failures), ContentType="application/x-ndjson")
        s3.put_object(Bucket=bucket, Key=f"{prefix}job-output-manifest.json",
                      Body=json.dumps({"jobSummary": summary}, indent=2).encode(),
                      ContentType="application/json")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "error"))
    return "unreachable"


def _conflicts(existing: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Whether imported data conflicts with the study's primary image set: its Patient or
    Study elements differ, or a series both hold has different Series elements."""
    for level in ("Patient", "Study"):
        if existing.get(level, {}).get("DICOM") != incoming.get(level, {}).get("DICOM"):
            return True
    mine = existing.get("Study", {}).get("Series", {})
    for uid, series in incoming["Study"]["Series"].items():
        if uid in mine and mine[uid].get("DICOM") != series.get("DICOM"):
            return True
    return False


def _merge(existing: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """The primary image set with the imported series and instances added; an instance
    imported again replaces the stored one (the guide: the latest version overwrites)."""
    import copy

    merged = copy.deepcopy(existing)
    series_map = merged["Study"].setdefault("Series", {})
    for uid, series in incoming["Study"]["Series"].items():
        if uid not in series_map:
            series_map[uid] = copy.deepcopy(series)
        else:
            series_map[uid].setdefault("Instances", {}).update(
                copy.deepcopy(series["Instances"]))
    return merged


def _locked(image_set: ImageSet) -> bool:
    return image_set.latest.state == LOCKED
