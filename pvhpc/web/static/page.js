// The session page: the launch form (form.js), the current session, its states pushed over server-sent events
// and its view once ready (session.js), and the lists of sessions, saved states and partitions (lists.js).
// Everything comes from the native API (api.js). This module builds the parts, each with what it needs, and
// starts them; the one thing they share is the store of what the API offers.

import { api, NOT_LOGGED_IN } from "./api.js";
import { $, answerOrPageError, showPageError } from "./dom.js";
import { LaunchForm } from "./form.js";
import { Lists } from "./lists.js";
import { SessionPanel } from "./session.js";

const LISTS_EVERY_MS = 30000;
const SCHEDULER_WORDS = "The scheduler does not answer now";

async function start() {
  const user = document.body.dataset.user;
  const staff = document.body.dataset.staff === "true";
  if (!user) {
    showPageError(NOT_LOGGED_IN);
    $("launch-button").disabled = true;
    return;
  }
  $("who").textContent = `Logged in as ${user}${staff ? " (staff)" : ""}`;

  // What the API offers: the applications (read once) and the partitions with what is free now.
  const store = { applications: [], partitions: [] };
  const panel = new SessionPanel(store, { onNews: () => lists.refreshSessions() });
  const form = new LaunchForm(store, {
    onLaunched: (session) => { panel.open(session); lists.refreshSessions(); },
  });
  const lists = new Lists({
    staff, shownId: () => panel.id, onOpen: (id) => panel.openById(id),
    onStartFrom: (path) => form.startFrom(path),
    onLaunchAgain: (session, statePath) => form.launchAgain(session, statePath),
  });

  async function refreshPartitions() {
    const answer = await answerOrPageError(api.partitions());
    if (!answer) return;
    store.partitions = answer.partitions;
    lists.showPartitions(store.partitions);
    if (answer.scheduler_error) showPageError(`${SCHEDULER_WORDS}: ${answer.scheduler_error}`);
    else if ($("page-error").textContent.startsWith(SCHEDULER_WORDS)) showPageError("");
    form.partitionsChanged();
  }

  $("refresh-partitions").addEventListener("click", refreshPartitions);
  let apps;
  try {
    [apps] = await Promise.all([api.applications(), refreshPartitions()]);
  } catch (error) {
    showPageError(error.message);
    return;
  }
  store.applications = apps.applications;
  form.showApplications();
  await lists.refreshSessions();
  await lists.refreshSavedStates();
  document.body.dataset.loaded = "true";
  setInterval(() => {
    if (!document.hidden) { lists.refreshSessions(); refreshPartitions(); lists.refreshSavedStates(); }
  }, LISTS_EVERY_MS);
}

start();
