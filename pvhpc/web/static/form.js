// The launch form: the applications and partitions the API offers, with their limits as hints, the data-file
// chooser, and the request it sends. The page checks nothing itself: the API's refusal lands next to the field
// it names (marked aria-invalid, focused and read out); one without a field sits under the form.

import { api } from "./api.js";
import { $, announce, element, fillSelect } from "./dom.js";
import { chooseIfOffered, rememberChoices, rememberedChoices } from "./formmemory.js";
import { partitionLimits, partitionNow } from "./words.js";

const NUMBER = /^-?\d+$/;

// A number where the person typed one; anything else as typed, for the API to name what is wrong with it.
const typed = (value) => (NUMBER.test(value) ? Number(value) : value);

export class LaunchForm {
  // store: {applications, partitions} as the API lists them; onLaunched(session): a session was submitted.
  constructor(store, { onLaunched }) {
    this.store = store;
    this.onLaunched = onLaunched;
    this.browsing = { root: 0, path: "" };   // where the data-file chooser is
    $("launch-form").addEventListener("submit", (event) => this.launch(event));
    $("application").addEventListener("change", () => this.applicationChanged());
    $("partition").addEventListener("change", () => this.partitionChanged());
    $("browse").addEventListener("click", () => this.toggleFiles());
  }

  disable() {
    $("launch-button").disabled = true;
  }

  application() {
    return this.store.applications.find((a) => a.name === $("application").value);
  }

  partition() {
    return this.store.partitions.find((p) => p.name === $("partition").value);
  }

  // The applications are in the store: offer them, the one chosen last time (if still offered) or the first.
  showApplications() {
    const apps = this.store.applications;
    fillSelect($("application"), apps.map((a) => [a.name, a.description ? `${a.name}: ${a.description}` : a.name]),
               apps[0] && apps[0].name);
    const last = rememberedChoices();
    const again = last && chooseIfOffered($("application"), last.application);
    this.applicationChanged();
    if (again) this.restoreChoices(last);
  }

  // The last launch's choices over the defaults, each only where the form offers it now (formmemory.js).
  restoreChoices(last) {
    if (!$("version-field").hidden) chooseIfOffered($("version"), last.version);
    if (chooseIfOffered($("partition"), last.partition)) this.partitionChanged();
    if (last.partition !== $("partition").value) return;   // the rest was that partition's
    const gpus = $("gpus");
    if (!gpus.disabled && Number.isInteger(last.gpus) && last.gpus >= 0 && last.gpus <= Number(gpus.max)) {
      gpus.value = String(last.gpus);
    }
    if (typeof last.walltime === "string" || typeof last.walltime === "number") $("walltime").value = last.walltime;
    if (!$("nodes-field").hidden) {
      for (const field of ["nodes", "ranks"]) {
        if (Number.isInteger(last[field]) && last[field] <= Number($(field).max)) $(field).value = String(last[field]);
      }
    }
    if (!$("account-field").hidden) chooseIfOffered($("account"), last.account);
    if (!$("qos-field").hidden) chooseIfOffered($("qos"), last.qos);
  }

  // The partitions in the store are new: refresh what the options say about them, keeping every choice.
  partitionsChanged() {
    for (const option of $("partition").options) {
      const p = this.store.partitions.find((x) => x.name === option.value);
      if (p) option.textContent = `${p.name}: ${partitionNow(p)}`;
    }
    const p = this.partition();
    if (p) $("partition-now").textContent = `Now: ${partitionNow(p)}. Limits: ${partitionLimits(p)}.`;
  }

  // A saved ParaView state to start the new session from.
  startFrom(path) {
    $("saved_state").value = path;
    $("launch").scrollIntoView();
    $("saved_state").focus();
    announce("The state is in the form: choose the application and launch.");
  }

  // A past session's request in the form again: its application, version, partition, GPUs, walltime and data file;
  // with statePath, the state it saved last to start from instead of its data file (the state opens its own data).
  // Launching stays the person's click (the form may be changed first); the API checks it all again.
  launchAgain(session, statePath = null) {
    if (!this.store.applications.some((a) => a.name === session.application)) {
      announce(`Application ${session.application} is no longer offered.`);
      return;
    }
    $("application").value = session.application;
    this.applicationChanged();
    if (session.version && [...$("version").options].some((o) => o.value === session.version)) {
      $("version").value = session.version;
    }
    if ([...$("partition").options].some((o) => o.value === session.partition)) {
      $("partition").value = session.partition;
      this.partitionChanged();
    }
    if (!$("gpus").disabled) $("gpus").value = String(session.gpus);
    // A session given more time reports its extended total, which may be more than the partition allows a new
    // job: the form asks for the partition's most instead, and says so.
    const limits = this.partition();
    const capped = limits && session.walltime_minutes > limits.walltime_minutes.max;
    $("walltime").value = capped ? limits.walltime.max : session.walltime;
    $("data").value = statePath ? "" : session.data || "";
    $("saved_state").value = statePath || "";
    $("launch").scrollIntoView();
    $("launch-button").focus();
    announce(`The form has that session's settings${session.version ? `, version ${session.version}` : ""}` +
             `${statePath ? " and its last saved state" : ""}` +
             `${capped ? `, with walltime ${limits.walltime.max}, the most partition ${limits.name} allows ` +
                         `(that session had ${session.walltime} with its more time)` : ""}: launch when ready.`);
  }

  applicationChanged() {
    const app = this.application();
    if (!app) return;
    describeApplication(app);
    // Versions only where the application offers them: its default chosen.
    const versions = app.versions || [];
    $("version-field").hidden = versions.length === 0;
    fillSelect($("version"), versions.map((v) => [v, v === app.default_version ? `${v} (default)` : v]),
               app.default_version);
    const offered = this.store.partitions.filter((p) => app.partitions.includes(p.name));
    fillSelect($("partition"), offered.map((p) => [p.name, `${p.name}: ${partitionNow(p)}`]), app.default_partition);
    const roots = app.data_roots;
    $("data-hint").textContent = roots.length === 1
      ? `A file under ${roots[0]} (a path relative to it is fine). Leave empty to start with a cone.`
      : `A file under one of: ${roots.join(", ")}. Leave empty to start with a cone.`;
    this.browsing = { root: 0, path: "" };
    if (!$("files").hidden) this.loadFiles();
    this.partitionChanged();
  }

  partitionChanged() {
    const p = this.partition();
    if (!p) return;
    $("partition-now").textContent = `Now: ${partitionNow(p)}. Limits: ${partitionLimits(p)}.`;
    const gpus = $("gpus");
    gpus.max = String(p.gpus.max);
    gpus.value = String(p.gpus.default);
    gpus.disabled = p.gpus.max === 0;
    $("gpus-hint").textContent = p.gpus.max === 0 ? "This partition has no GPUs." : `0 to ${p.gpus.max}.`;
    $("walltime").value = p.walltime.default;
    $("walltime-hint").textContent = `Hours:minutes:seconds or minutes; at most ${p.walltime.max}.`;
    showParallel(parallelLimits(p, this.application()));
    $("account-field").hidden = p.accounts.length === 0;
    fillSelect($("account"), p.accounts.map((a) => [a, a]), p.accounts[0]);
    $("qos-field").hidden = p.qos.length === 0;
    fillSelect($("qos"), [["", "default"], ...p.qos.map((q) => [q, q])], "");
  }

  request() {
    const request = { application: $("application").value, partition: $("partition").value };
    if (!$("version-field").hidden && $("version").value) request.version = $("version").value;
    const p = this.partition();
    const gpus = $("gpus").value.trim();
    if (!$("gpus").disabled && gpus !== "") request.gpus = typed(gpus);
    const walltime = $("walltime").value.trim();
    if (walltime) request.walltime = walltime;
    if (parallelLimits(p, this.application())) {
      for (const field of ["nodes", "ranks"]) {
        const value = $(field).value.trim();
        if (value !== "") request[field] = typed(value);
      }
    }
    if (p && p.accounts.length) request.account = $("account").value;
    if (p && p.qos.length && $("qos").value) request.qos = $("qos").value;
    const data = $("data").value.trim();
    if (data) request.data = data;
    const savedState = $("saved_state").value.trim();
    if (savedState) request.saved_state = savedState;
    if ($("continue").checked) request.continue = true;   // a successor job before the walltime (docs/web.md)
    return request;
  }

  async launch(event) {
    event.preventDefault();
    clearErrors();
    const button = $("launch-button");
    button.disabled = true;
    button.textContent = "Launching…";
    try {
      const request = this.request();
      const session = await api.launch(request);
      rememberChoices(request);
      announce("Session submitted.");
      this.onLaunched(session);
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
      button.textContent = "Launch";
    }
  }

  // -- the data-file chooser --

  toggleFiles() {
    const files = $("files");
    files.hidden = !files.hidden;
    $("browse").setAttribute("aria-expanded", String(!files.hidden));
    if (!files.hidden) this.loadFiles();
  }

  async loadFiles() {
    const app = this.application();
    const list = $("files-list");
    const browsing = this.browsing;
    let listing;
    try {
      listing = await api.files(app.name, browsing.root, browsing.path);
    } catch (error) {
      list.replaceChildren(element("li", error.message));
      return;
    }
    const goTo = (root, path) => { this.browsing = { root, path }; this.loadFiles(); };
    $("files-where").textContent = `In ${listing.root}${listing.path ? "/" + listing.path : ""}:`;
    const items = [];
    app.data_roots.forEach((root, index) => {
      if (app.data_roots.length > 1 && index !== browsing.root) {
        items.push(fileButton(`Other data directory: ${root}`, () => goTo(index, "")));
      }
    });
    if (listing.path) {
      const up = listing.path.split("/").slice(0, -1).join("/");
      items.push(fileButton("Up one directory", () => goTo(browsing.root, up)));
    }
    for (const entry of listing.entries) {
      const relative = listing.path ? `${listing.path}/${entry.name}` : entry.name;
      if (entry.kind === "directory") {
        items.push(fileButton(`${entry.name}/`, () => goTo(browsing.root, relative)));
      } else {
        items.push(fileButton(entry.name, () => {
          $("data").value = `${listing.root}/${relative}`;
          $("files").hidden = true;
          $("browse").setAttribute("aria-expanded", "false");
          $("data").focus();
        }));
      }
    }
    if (!listing.entries.length) items.push(element("li", "(empty)"));
    if (listing.truncated) items.push(element("li", "(more files than shown; type the path)"));
    list.replaceChildren(...items);
  }
}

function describeApplication(app) {
  const hint = $("application-hint");
  if (app.opens === "client") {
    const direct = element("a", `${app.client_url}`, { href: app.client_url });
    hint.replaceChildren(`Opens in ${app.name}'s own web client (and in the quick view here, if you like). `,
                         "Or open ", direct, " directly: it launches a session itself.");
  } else if (app.opens === "served" && app.client_url) {
    const direct = element("a", `${app.client_url}`, { href: app.client_url });
    hint.replaceChildren("Its session serves its own web client, which opens in a new tab when the session is ",
                         "ready. Or open ", direct, " directly: it launches a session itself.");
  } else if (app.opens === "served") {
    hint.textContent = "Its session serves its own web client, which opens in a new tab when the session is ready.";
  } else if (app.opens === "desktop") {
    const pvsc = element("a", "this site's server configuration", { href: "api/v1/pvsc", download: "" });
    hint.replaceChildren("For ParaView's desktop client: once the session is ready, run 'pvhpc connect SESSION' ",
                         "where ParaView runs and connect ParaView to the address it prints. Or load ", pvsc,
                         " in ParaView (File > Connect > Load Servers): its entries launch and connect by themselves.");
  } else {
    hint.textContent = "Opens in the quick view on this page.";
  }
}

// Nodes and ranks only where staff allow a parallel session: the partition's limits (null: none there) and an
// application that runs over a pvserver. The limits bound the inputs; the API checks the rest (evenness).
function parallelLimits(p, app) {
  return p && app && app.parallel && p.parallel ? p.parallel : null;
}

function showParallel(limits) {
  $("nodes-field").hidden = $("ranks-field").hidden = !limits;
  $("nodes").value = "";
  $("ranks").value = "";
  if (!limits) return;
  $("nodes").max = String(limits.max_nodes);
  $("ranks").max = String(limits.max_ranks);
  const rules = [`up to ${limits.max_nodes} node${limits.max_nodes > 1 ? "s" : ""}`, `up to ${limits.max_ranks} ranks`];
  if (limits.max_ranks_per_node) rules.push(`at most ${limits.max_ranks_per_node} a node`);
  if (limits.ranks_divisible_by_nodes) rules.push("the same number on every node");
  $("parallel-hint").textContent = `A ParaView server over several processes: ${rules.join(", ")}. ` +
    "Empty ranks: one process, as usual; nodes alone: one rank a node.";
}

function fileButton(label, action) {
  const li = element("li");
  const button = element("button", label, { type: "button" });
  button.addEventListener("click", action);
  li.append(button);
  return li;
}

// Every error of the form goes, whichever fields it has: each field's error is the <p class="error"> its input
// names in aria-describedby, "<field>-error", and the form's own is "form-error".
function clearErrors() {
  for (const error of $("launch-form").querySelectorAll("p.error")) {
    error.hidden = true;
    error.textContent = "";
    const input = $(error.id.replace(/-error$/, ""));
    if (input) input.removeAttribute("aria-invalid");
  }
}

function showError(error) {
  const input = error.field && $(error.field);
  const where = error.field && $(`${error.field}-error`);
  if (input && where) {
    where.textContent = error.message;
    where.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    announce(`${input.labels[0] ? input.labels[0].textContent : error.field}: ${error.message}`);
  } else {
    const p = $("form-error");
    p.textContent = error.message;
    p.hidden = false;
  }
}
