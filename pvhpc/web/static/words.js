// What the page says about what the API sends: states, times, a session's job, a partition now. Pure functions
// of the API's answers. Why a session ended is the API's own words (end_reason_text), as every client shows them.

const STATE_WORDS = {
  submitting: "Submitting", queued: "Queued", starting: "Starting", ready: "Ready",
  unknown: "Unknown (the scheduler does not answer)", ended: "Ended",
};

export function stateWords(state) {
  return STATE_WORDS[state] || state;
}

function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// How a session ended: "Cancelled by its user".
export function howItEnded(session) {
  return capitalised(session.end_reason_text || session.end_reason || "");
}

// What its detail says beyond how it ended: an ended session's detail begins with the end reason's words.
export function whyItEnded(session) {
  const detail = session.detail || "";
  const words = session.end_reason_text;
  if (!words || !detail.startsWith(words)) return detail;
  return detail.slice(words.length).replace(/^: /, "");
}

// The detail line of the current session: Slurm's reason while queued; how and why, once ended.
export function sessionDetail(session) {
  if (session.state !== "ended") return session.detail || "";
  const why = whyItEnded(session);
  return `${howItEnded(session)}${why ? ": " + why : ""}`;
}

// A state in the running sessions' list: "Queued: waiting for free nodes or GPUs".
export function stateWithDetail(session) {
  return `${stateWords(session.state)}${session.detail ? ": " + session.detail : ""}`;
}

export function formatTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function fromNow(iso) {
  const minutes = Math.round((new Date(iso) - Date.now()) / 60000);
  if (minutes <= 0) return "now";
  if (minutes < 90) return `in about ${minutes} min`;
  return `in about ${Math.round(minutes / 60)} h`;
}

export function expectedStart(session) {
  return session.expected_start
    ? `${formatTime(session.expected_start)} (${fromNow(session.expected_start)})`
    : "not known yet: Slurm gives no expected start for this job now";
}

// "42:10 (the walltime ends the session at 15:30)": a running session's countdown at this moment.
export function timeLeft(endsAt) {
  const seconds = Math.max(0, Math.round((new Date(endsAt) - Date.now()) / 1000));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const clock = `${h ? h + ":" + String(m).padStart(2, "0") : m}:${String(s).padStart(2, "0")}`;
  const until = new Date(endsAt).toLocaleTimeString(undefined, { timeStyle: "short" });
  return `${clock} (the walltime ends the session at ${until})`;
}

const plural = (n, word) => `${n} ${word}${n > 1 ? "s" : ""}`;

// "Slurm job 42, partition gpu, 1 GPU, walltime 00:30:00, on gpu01, data shapes/cube.vtk"
export function jobLine(session) {
  return [
    session.job_id ? `Slurm job ${session.job_id}` : "not yet submitted",
    `partition ${session.partition}`, session.gpus ? plural(session.gpus, "GPU") : null,
    `walltime ${session.walltime}`, session.node ? `on ${session.node}` : null, session.data ? `data ${session.data}` : null,
  ].filter(Boolean).join(", ");
}

// "2 ranks on 2 nodes", or "" for a session of one process.
export function parallelLine(session) {
  return session.ranks ? `${plural(session.ranks, "rank")} on ${plural(session.nodes, "node")}` : "";
}

// What the page reads out when a session's state (or its reason for waiting) changes.
export function stateNews(session, opensInView) {
  let words = `Session ${stateWords(session.state)}`;
  if (session.state === "queued") {
    words += `: ${session.detail || "waiting"}. Expected start: ${session.expected_start ? formatTime(session.expected_start) : "not known yet"}.`;
  } else if (session.state === "ended") {
    words += `: ${sessionDetail(session)}.`;
  } else if (session.state === "ready") {
    words += opensInView ? ". The view is loading below." : ". Open it with the link below.";
  }
  return words;
}

export function partitionNow(p) {
  if (!p.now) return "what is free now is not known (the scheduler did not answer)";
  const parts = [`${p.now.idle_nodes} of ${p.now.nodes} nodes idle`];
  if (p.now.gpus_total) parts.unshift(`${p.now.gpus_free} of ${p.now.gpus_total} GPUs free`);
  if (!p.now.available) parts.unshift("not available");
  return parts.join(", ");
}

export function partitionLimits(p) {
  const gpus = p.gpus.max ? `up to ${plural(p.gpus.max, "GPU")}` : "no GPUs";
  return `${gpus}, walltime up to ${p.walltime.max}`;
}
