#!/usr/bin/env bash
# Deploy imgsvc to Google Cloud (Cloud Functions 2nd gen, Cloud Tasks, Firestore, Cloud Storage,
# Eventarc, Secret Manager, Firebase Hosting).
#
#   PROJECT_ID=my-project REGION=us-central1 ./deploy.sh            deploy (or update) everything
#   PROJECT_ID=my-project REGION=us-central1 ./deploy.sh --dry-run  print every command, run none
#
# Idempotent: every resource is created when missing and updated otherwise, so running it again
# after a change deploys the change. Secrets: WEBHOOK_SECRET and API_KEYS, when set in the
# environment, become new versions of their Secret Manager secrets when they differ from the
# latest one (never printed); a secret with no version stops the deploy before anything else.
# The dry run changes nothing anywhere: what a real run would create is shown as created.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

DRY_RUN=false
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=true ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

: "${PROJECT_ID:?set PROJECT_ID to the Google Cloud project to deploy to}"
REGION=${REGION:-us-central1}
# Where a new Firestore database is created: a regional one in the functions' region keeps the
# trigger in one location. An existing database stays where it is, and the trigger follows it.
FIRESTORE_LOCATION=${FIRESTORE_LOCATION:-$REGION}
RUNTIME=${RUNTIME:-python311}
UPLOADS_BUCKET=${UPLOADS_BUCKET:-$PROJECT_ID-imgsvc-uploads}
OUTPUTS_BUCKET=${OUTPUTS_BUCKET:-$PROJECT_ID-imgsvc-outputs}
OUTPUT_URL_MODE=${OUTPUT_URL_MODE:-public}
# Cloud Tasks, Eventarc and Cloud Scheduler reach internal-only services in the same project;
# anything else cannot even try. Set INTERNAL_INGRESS=all to rely on IAM alone.
INTERNAL_INGRESS=${INTERNAL_INGRESS:-internal-only}
FIREBASE_TOOLS=${FIREBASE_TOOLS:-firebase-tools@15.34.2}
BUILD_DIR=.build/functions
FIREBASE_DIR=.build/firebase
# Waits between attempts grow from this many seconds (eventual consistency, see retry()).
RETRY_BASE_SECONDS=${RETRY_BASE_SECONDS:-5}

SA_API="imgsvc-api@$PROJECT_ID.iam.gserviceaccount.com"         # upload
SA_STATUS="imgsvc-status@$PROJECT_ID.iam.gserviceaccount.com"   # status: reads only
SA_WORKER="imgsvc-worker@$PROJECT_ID.iam.gserviceaccount.com"   # process_image, finalize
SA_TASKS="imgsvc-tasks@$PROJECT_ID.iam.gserviceaccount.com"     # the identity Cloud Tasks calls with
SA_TRIGGER="imgsvc-trigger@$PROJECT_ID.iam.gserviceaccount.com" # the identity Eventarc calls with
SA_BUILD="imgsvc-build@$PROJECT_ID.iam.gserviceaccount.com"     # Cloud Build, building the functions
SA_SCHEDULER="imgsvc-scheduler@$PROJECT_ID.iam.gserviceaccount.com" # the identity the sweep job calls with

SECRET_WEBHOOK=imgsvc-webhook-secret
SECRET_API_KEYS=imgsvc-api-keys

QUEUE_FANOUT=fan-out
QUEUE_IMAGES=images
QUEUE_WEBHOOKS=webhooks
SWEEP_JOB=imgsvc-sweep

cd "$(dirname "$0")"

# Print a command; run it unless this is a dry run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if ! $DRY_RUN; then "$@"; fi
}

# Like run, for what Google applies eventually: a binding on a service account created
# seconds ago, the first Eventarc trigger of a project (its service agent's permissions
# propagate for minutes). Tries again with growing waits, then gives up with the last error.
retry() {
  local attempts=$1 attempt=1 wait=$RETRY_BASE_SECONDS
  shift
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if $DRY_RUN; then return 0; fi
  until "$@"; do
    if ((attempt >= attempts)); then
      echo "deploy.sh: still failing after $attempts attempts: $1 $2 $3" >&2
      return 1
    fi
    echo "deploy.sh: attempt $attempt failed; trying again in ${wait}s (Google applies changes eventually)" >&2
    sleep "$wait"
    attempt=$((attempt + 1))
    wait=$((wait * 2))
  done
}

# A read-only look that decides between create and update. Returns 0 when the resource
# exists (what it printed is in LOOKED_UP), 1 only when Google answers NOT_FOUND (gcloud
# storage says "not found: 404"). Anything else (no permission, an API still disabled, a
# network error) stops the deploy: taking it for "missing" would create what is already there.
# A dry run never looks and shows the path of a first deployment (create).
LOOKED_UP=
lookup() {
  LOOKED_UP=
  if $DRY_RUN; then return 1; fi
  local err status=0
  err=$(mktemp)
  LOOKED_UP=$("$@" 2>"$err") || status=$?
  if ((status == 0)); then
    rm -f "$err"
    return 0
  fi
  if grep -qE 'NOT_FOUND|[Nn]ot found: 404|HTTPError 404' "$err"; then
    rm -f "$err"
    return 1
  fi
  echo "deploy.sh: could not tell whether this exists: $*" >&2
  cat "$err" >&2
  rm -f "$err"
  exit 1
}

exists() { lookup "$@"; }

enable_apis() {
  run gcloud services enable --project "$PROJECT_ID" \
    cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
    artifactregistry.googleapis.com cloudtasks.googleapis.com firestore.googleapis.com \
    eventarc.googleapis.com pubsub.googleapis.com secretmanager.googleapis.com \
    storage.googleapis.com iam.googleapis.com firebasehosting.googleapis.com \
    firebaserules.googleapis.com firebase.googleapis.com logging.googleapis.com \
    iamcredentials.googleapis.com cloudscheduler.googleapis.com
}

# Rules and Hosting deploy only to a Firebase project: add Firebase to the Cloud project, once.
firebase_project() {
  if ! $DRY_RUN; then
    local listed
    listed=$(npx --yes "$FIREBASE_TOOLS" projects:list --json --non-interactive) || {
      echo "deploy.sh: could not list the Firebase projects (npx $FIREBASE_TOOLS login?)" >&2
      exit 1
    }
    if grep -qE "\"projectId\": *\"$PROJECT_ID\"" <<<"$listed"; then return 0; fi
  fi
  run npx --yes "$FIREBASE_TOOLS" projects:addfirebase "$PROJECT_ID" --non-interactive
}

firestore_database() {
  local location type
  if lookup gcloud firestore databases describe --database='(default)' --project "$PROJECT_ID" \
    --format='value(locationId,type)'; then
    read -r location type <<<"$LOOKED_UP"
    # The trigger must be where the database is (a region, or nam5, eur3...), whatever REGION is.
    FIRESTORE_LOCATION=$location
    if [[ $type != FIRESTORE_NATIVE ]]; then
      echo "deploy.sh: the (default) Firestore database of $PROJECT_ID is in ${type:-an unknown} mode;" \
        "imgsvc needs Native mode (its trigger and queries). Use a project whose database is in" \
        "Native mode, or one with no database yet." >&2
      exit 1
    fi
  else
    run gcloud firestore databases create --database='(default)' --location="$FIRESTORE_LOCATION" \
      --type=firestore-native --project "$PROJECT_ID"
  fi
  # Upload rate-limit windows delete themselves once over (shared/adapters/gcp/firestore_rate_limit.py),
  # and idempotency keys after their day (shared/adapters/gcp/firestore_upload_keys.py).
  local group
  for group in rate_limits upload_keys; do
    run gcloud firestore fields ttls update expires_at --collection-group="$group" \
      --enable-ttl --project "$PROJECT_ID" --quiet
  done
}

service_accounts() {
  local sa name
  for sa in "$SA_API" "$SA_STATUS" "$SA_WORKER" "$SA_TASKS" "$SA_TRIGGER" "$SA_BUILD" \
    "$SA_SCHEDULER"; do
    name=${sa%%@*}
    if ! exists gcloud iam service-accounts describe "$sa" --project "$PROJECT_ID"; then
      run gcloud iam service-accounts create "$name" --display-name="imgsvc ${name#imgsvc-}" \
        --project "$PROJECT_ID"
    fi
  done
}

buckets() {
  # Uploads are the clients' own data: private, and never public by accident.
  if ! exists gcloud storage buckets describe "gs://$UPLOADS_BUCKET" --project "$PROJECT_ID"; then
    run gcloud storage buckets create "gs://$UPLOADS_BUCKET" --project "$PROJECT_ID" \
      --location="$REGION" --uniform-bucket-level-access --public-access-prevention
  fi
  if ! exists gcloud storage buckets describe "gs://$OUTPUTS_BUCKET" --project "$PROJECT_ID"; then
    run gcloud storage buckets create "gs://$OUTPUTS_BUCKET" --project "$PROJECT_ID" \
      --location="$REGION" --uniform-bucket-level-access
  fi
  # Uploaded CSVs are only needed until their request is finalised; keep them 30 days.
  run gcloud storage buckets update "gs://$UPLOADS_BUCKET" --project "$PROJECT_ID" \
    --lifecycle-file=deploy/uploads-lifecycle.json
  if [[ $OUTPUT_URL_MODE == public ]]; then
    run gcloud storage buckets add-iam-policy-binding "gs://$OUTPUTS_BUCKET" \
      --member=allUsers --role=roles/storage.objectViewer
  fi
}

# A secret with no version makes every instance that mounts it fail to start: every secret
# is checked before anything is created. A value given in the environment becomes the latest
# version, unless it already is.
secret_variable() { # secret name -> the variable that may hold its value
  case $1 in
    "$SECRET_WEBHOOK") echo WEBHOOK_SECRET ;;
    "$SECRET_API_KEYS") echo API_KEYS ;;
  esac
}

secrets() {
  local name variable missing=()
  for name in "$SECRET_WEBHOOK" "$SECRET_API_KEYS"; do
    variable=$(secret_variable "$name")
    if ! exists gcloud secrets describe "$name" --project "$PROJECT_ID"; then
      missing+=("$name")
      [[ -n ${!variable:-} ]] && continue
    elif [[ -n ${!variable:-} ]] || {
      lookup gcloud secrets versions list "$name" --project "$PROJECT_ID" \
        --filter=state:ENABLED --limit=1 --format='value(name)' && [[ -n $LOOKED_UP ]]
    }; then
      continue
    fi
    echo "deploy.sh: Secret Manager secret $name has no enabled version: set $variable and" \
      "run again (every function that reads it would fail to start)" >&2
    exit 1
  done
  for name in "${missing[@]}"; do
    run gcloud secrets create "$name" --replication-policy=automatic --project "$PROJECT_ID"
  done
  for name in "$SECRET_WEBHOOK" "$SECRET_API_KEYS"; do
    variable=$(secret_variable "$name")
    [[ -n ${!variable:-} ]] || continue
    if [[ " ${missing[*]} " != *" $name "* ]] &&
      lookup gcloud secrets versions access latest --secret="$name" --project "$PROJECT_ID" &&
      [[ $LOOKED_UP == "${!variable}" ]]; then
      echo "# $name: \$$variable is its latest version already"
      continue
    fi
    printf '+ gcloud secrets versions add %q --data-file=- --project %q  # value from $%s\n' \
      "$name" "$PROJECT_ID" "$variable"
    if ! $DRY_RUN; then
      printf '%s' "${!variable}" | gcloud secrets versions add "$name" --data-file=- \
        --project "$PROJECT_ID" >/dev/null
    fi
  done
}

queue() { # name, then rate-limit and retry flags (the same for create and update)
  local name=$1
  shift
  local verb=create
  if exists gcloud tasks queues describe "$name" --location="$REGION" --project "$PROJECT_ID"; then
    verb=update
  fi
  run gcloud tasks queues "$verb" "$name" --location="$REGION" --project "$PROJECT_ID" "$@"
}

queues() {
  # Slices: few and quick; each one queues up to 500 images.
  queue "$QUEUE_FANOUT" --max-dispatches-per-second=20 --max-concurrent-dispatches=10 \
    --max-attempts=50 --min-backoff=1s --max-backoff=60s
  # Images: the bulk. The concurrency cap is the global limit on fetches and CPU; the
  # backoff spreads retries of a struggling image host. IMAGE_MAX_ATTEMPTS ends an image
  # earlier; --max-attempts is only the backstop.
  queue "$QUEUE_IMAGES" --max-dispatches-per-second=100 --max-concurrent-dispatches=200 \
    --max-attempts=30 --min-backoff=2s --max-backoff=300s --max-doublings=6
  # Webhook attempts run at their own schedule_time; these retries only cover finalize
  # itself failing to make an attempt.
  queue "$QUEUE_WEBHOOKS" --max-dispatches-per-second=20 --max-concurrent-dispatches=50 \
    --max-attempts=10 --min-backoff=5s --max-backoff=600s
}

# Every binding names a service account that may have been created seconds ago: IAM can
# refuse it as unknown until the account has propagated, so bindings are retried.
IAM_ATTEMPTS=6

bind_project() { # member, role
  retry "$IAM_ATTEMPTS" gcloud projects add-iam-policy-binding "$PROJECT_ID" --member="$1" \
    --role="$2" --condition=None --quiet
}

bind_bucket() { # bucket, member, role
  retry "$IAM_ATTEMPTS" gcloud storage buckets add-iam-policy-binding "gs://$1" --member="$2" \
    --role="$3"
}

bind_queue() { # queue, member
  retry "$IAM_ATTEMPTS" gcloud tasks queues add-iam-policy-binding "$1" --location="$REGION" \
    --project "$PROJECT_ID" --member="$2" --role=roles/cloudtasks.enqueuer
}

bind_secret() { # secret, member
  retry "$IAM_ATTEMPTS" gcloud secrets add-iam-policy-binding "$1" --project "$PROJECT_ID" \
    --member="$2" --role=roles/secretmanager.secretAccessor
}

bind_account() { # service account, member, role
  retry "$IAM_ATTEMPTS" gcloud iam service-accounts add-iam-policy-binding "$1" \
    --project "$PROJECT_ID" --member="$2" --role="$3"
}

iam() {
  local api="serviceAccount:$SA_API" worker="serviceAccount:$SA_WORKER"
  local status="serviceAccount:$SA_STATUS"
  bind_project "$api" roles/datastore.user
  bind_project "$status" roles/datastore.viewer
  bind_project "$worker" roles/datastore.user
  bind_project "serviceAccount:$SA_TRIGGER" roles/eventarc.eventReceiver
  # New projects' default build account may lack what a function build needs: the functions
  # are built as imgsvc-build, with the role Google documents for it (logs, images, sources).
  bind_project "serviceAccount:$SA_BUILD" roles/run.builder
  bind_bucket "$UPLOADS_BUCKET" "$api" roles/storage.objectCreator
  bind_bucket "$UPLOADS_BUCKET" "$worker" roles/storage.objectViewer
  # objectUser, not objectCreator: a retried image overwrites its own output.
  bind_bucket "$OUTPUTS_BUCKET" "$worker" roles/storage.objectUser
  bind_queue "$QUEUE_FANOUT" "$api"
  bind_queue "$QUEUE_WEBHOOKS" "$api"
  bind_queue "$QUEUE_IMAGES" "$worker"
  bind_queue "$QUEUE_WEBHOOKS" "$worker"
  # The sweeper runs in process_image and re-queues lost slices too.
  bind_queue "$QUEUE_FANOUT" "$worker"
  # Creating a task that carries an OIDC token of imgsvc-tasks means acting as it.
  bind_account "$SA_TASKS" "$api" roles/iam.serviceAccountUser
  bind_account "$SA_TASKS" "$worker" roles/iam.serviceAccountUser
  bind_secret "$SECRET_API_KEYS" "$api"
  bind_secret "$SECRET_API_KEYS" "$status"
  bind_secret "$SECRET_WEBHOOK" "$worker"
  if [[ $OUTPUT_URL_MODE == signed ]]; then
    # V4 signing without a key file goes through IAM signBlob (the IAM Credentials API) as
    # the function's own account: the worker signs what it stores, status mints fresh URLs on
    # every read, and a signed URL reads with its signer's rights.
    bind_account "$SA_WORKER" "$worker" roles/iam.serviceAccountTokenCreator
    bind_account "$SA_STATUS" "$status" roles/iam.serviceAccountTokenCreator
    bind_bucket "$OUTPUTS_BUCKET" "$status" roles/storage.objectViewer
  fi
}

function_url() { # function name -> its deterministic Cloud Run URL
  local service=${1//_/-}
  printf 'https://%s-%s.%s.run.app/' "$service" "$PROJECT_NUMBER" "$REGION"
}

deploy_functions() {
  if [[ -z ${PROJECT_NUMBER:-} ]]; then
    if $DRY_RUN; then
      PROJECT_NUMBER='<project-number>'
    else
      PROJECT_NUMBER=$(gcloud projects describe "$PROJECT_ID" --format='value(projectNumber)')
    fi
  fi
  local env
  env="GOOGLE_CLOUD_PROJECT=$PROJECT_ID,UPLOADS_BUCKET=$UPLOADS_BUCKET"
  env+=",OUTPUTS_BUCKET=$OUTPUTS_BUCKET,OUTPUT_URL_MODE=$OUTPUT_URL_MODE,TASK_BACKEND=cloudtasks"
  env+=",CLOUD_TASKS_LOCATION=$REGION,TASKS_SERVICE_ACCOUNT=$SA_TASKS"
  env+=",PROCESS_IMAGE_URL=$(function_url process_image),FINALIZE_URL=$(function_url finalize)"

  # Built as imgsvc-build (see iam), not as whatever default a new project gives Cloud Build.
  local common=(--gen2 "--runtime=$RUNTIME" "--region=$REGION" --project "$PROJECT_ID"
    "--build-service-account=projects/$PROJECT_ID/serviceAccounts/$SA_BUILD")
  # functions-framework serves a function with THREADS threads (default 4 per CPU), however
  # many requests --concurrency lets in: each gets threads to match its concurrency.
  threads() { printf -- '--set-env-vars=%s,THREADS=%s' "$env" "$1"; }

  # The public API. Anyone may call it; API keys (Secret Manager) decide who gets what.
  # Hosting ends every request after 60 s: a longer timeout would only hide that cut.
  run gcloud functions deploy upload "${common[@]}" --source="$BUILD_DIR/upload" \
    --entry-point=upload --trigger-http --allow-unauthenticated \
    --service-account="$SA_API" --set-secrets="API_KEYS=$SECRET_API_KEYS:latest" \
    --memory=1GiB --cpu=1 --timeout=60s --concurrency=8 "$(threads 8)" --max-instances=20
  run gcloud functions deploy status "${common[@]}" --source="$BUILD_DIR/status" \
    --entry-point=status --trigger-http --allow-unauthenticated \
    --service-account="$SA_STATUS" --set-secrets="API_KEYS=$SECRET_API_KEYS:latest" \
    --memory=512MiB --cpu=1 --timeout=30s --concurrency=40 "$(threads 40)" --max-instances=20

  # Internal: only Cloud Tasks (as imgsvc-tasks) may call it. Two images at a time on two
  # vCPUs, the next waits in the queue. Memory per image at the 50-megapixel cap: about
  # 150 MB for a JPEG, up to about 900 MB for a transparent picture re-encoded to WebP
  # (libwebp's buffers; measured 213 MB at 12 MP), hence 4 GiB for two.
  run gcloud functions deploy process_image "${common[@]}" --source="$BUILD_DIR/process_image" \
    --entry-point=process_image --trigger-http --no-allow-unauthenticated \
    --ingress-settings="$INTERNAL_INGRESS" --service-account="$SA_WORKER" \
    --memory=4GiB --cpu=2 --timeout=300s --concurrency=2 "$(threads 2)" --max-instances=100

  # Internal: the Firestore trigger on image documents (Eventarc, as imgsvc-trigger) and
  # webhook attempts from Cloud Tasks. --retry: a failed finalisation is delivered again.
  # The trigger sits where the database is. A project's first Eventarc trigger can be refused
  # while Eventarc's service agent gets its permissions (minutes): retried.
  retry 4 gcloud functions deploy finalize "${common[@]}" --source="$BUILD_DIR/finalize" \
    --entry-point=finalize \
    --trigger-event-filters=type=google.cloud.firestore.document.v1.written \
    --trigger-event-filters=database='(default)' \
    --trigger-event-filters-path-pattern=document='requests/{requestId}/tally/{shard}' \
    --trigger-location="$FIRESTORE_LOCATION" --trigger-service-account="$SA_TRIGGER" --retry \
    --no-allow-unauthenticated --ingress-settings="$INTERNAL_INGRESS" \
    --service-account="$SA_WORKER" --set-secrets="WEBHOOK_SECRET=$SECRET_WEBHOOK:latest" \
    --memory=1GiB --cpu=1 --timeout=540s --concurrency=10 "$(threads 10)" --max-instances=50
}

invokers() {
  run gcloud functions add-invoker-policy-binding process_image --region="$REGION" \
    --project "$PROJECT_ID" --member="serviceAccount:$SA_TASKS"
  run gcloud functions add-invoker-policy-binding finalize --region="$REGION" \
    --project "$PROJECT_ID" --member="serviceAccount:$SA_TASKS"
  run gcloud functions add-invoker-policy-binding finalize --region="$REGION" \
    --project "$PROJECT_ID" --member="serviceAccount:$SA_TRIGGER"
  run gcloud functions add-invoker-policy-binding process_image --region="$REGION" \
    --project "$PROJECT_ID" --member="serviceAccount:$SA_SCHEDULER"
}

# The sweeper (shared/usecases/sweep.py): every minute, the `sweep` message to process_image
# with an OIDC token of imgsvc-scheduler. Whatever a lost task or event left undone is found
# again from Firestore. No retries: the next minute's run looks again anyway. A job runs at
# most once a minute, so the message asks for one more sweep half a minute later (a Cloud Task):
# a sweep every 30 s, as the local ticker's SWEEP_INTERVAL, which the promised bounds assume.
sweep_job() {
  local uri verb headers
  uri=$(function_url process_image)
  if exists gcloud scheduler jobs describe "$SWEEP_JOB" --location="$REGION" --project "$PROJECT_ID"; then
    verb=update headers=--update-headers=Content-Type=application/json
  else
    verb=create headers=--headers=Content-Type=application/json
  fi
  run gcloud scheduler jobs "$verb" http "$SWEEP_JOB" --location="$REGION" --project "$PROJECT_ID" \
    --schedule='* * * * *' --time-zone=Etc/UTC --uri="$uri" --http-method=POST "$headers" \
    --message-body='{"kind":"sweep","again_in":30}' --oidc-service-account-email="$SA_SCHEDULER" \
    --oidc-token-audience="$uri" --attempt-deadline=300s --max-retry-attempts=0
}

firebase() {
  # hosting/ gets its built files first: Swagger UI and openapi.yaml, which /docs reads; then
  # the Firebase config is staged again with them, its rewrites naming the functions' region.
  run python3 scripts/build_hosting.py
  run python3 scripts/stage_firebase.py --region "$REGION" --out "$FIREBASE_DIR"
  # firestore.rules (deny every client-SDK access) and Hosting's rewrites to the functions.
  run npx --yes "$FIREBASE_TOOLS" deploy --only firestore:rules,hosting --project "$PROJECT_ID" \
    --config "$FIREBASE_DIR/firebase.json" --non-interactive
}

# What is shipped, staged locally first (.build/): the four function folders with the codec
# wheel, and the Firebase config for this region. A dry run stages nothing.
stage() {
  run make --no-print-directory stage REGION="$REGION"
}

# Checks that can refuse the deploy come first, before anything is created or changed.
enable_apis
secrets
firestore_database
firebase_project
stage
service_accounts
buckets
queues
iam
deploy_functions
invokers
sweep_job
firebase
if $DRY_RUN; then
  echo "dry run: nothing was run or changed"
else
  echo "imgsvc is deployed: https://$PROJECT_ID.web.app (POST /upload, GET /status/{id})"
fi
