// Local Step Functions engine server.
//
// One long-running Node process runs many executions of ASL definitions with
// aws-local-stepfunctions and answers JSON over HTTP on 127.0.0.1, so callers
// do not pay a Node start per execution. The first stdout line is {"port":N}.
// The process exits when its stdin closes, so it never outlives its parent.
//
// Lambda Task states are invoked through the real Lambda Invoke API with the
// AWS SDK for JavaScript, at the endpoint in AWS_ENDPOINT_URL_LAMBDA (which must
// be a loopback address). The invocation is wired as a task override rather
// than left to the library, because the library names errors differently from
// Step Functions: it calls an Invoke API failure "ServiceException" where Step
// Functions says "Lambda.ServiceException", its Cause is "Type: message" where
// Step Functions passes the function's error payload, and its SDK client
// retries 5xx and throttling answers on its own, hiding them from Retry.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { StateMachine, ExecutionAbortedError, ExecutionTimeoutError } from 'aws-local-stepfunctions';
import { LambdaClient, InvokeCommand, LambdaServiceException } from '@aws-sdk/client-lambda';
import validateASL from 'asl-validator';

const REGION = process.env.AWS_REGION || 'us-east-1';
const ACCOUNT = process.env.ENGINE_ACCOUNT_ID || '000000000000';
const LAMBDA_ENDPOINT = process.env.AWS_ENDPOINT_URL_LAMBDA || '';
const LAMBDA_ARN = /^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$/;
const LONG_POLL_MAX_MS = 30_000;

function log(msg, fields = {}) {
  process.stderr.write(JSON.stringify({ msg, ...fields }) + '\n');
}

function isLoopback(endpoint) {
  try {
    const host = new URL(endpoint).hostname;
    return host === 'localhost' || host === '[::1]' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
  } catch {
    return false;
  }
}

if (LAMBDA_ENDPOINT && !isLoopback(LAMBDA_ENDPOINT)) {
  log('refusing to start: AWS_ENDPOINT_URL_LAMBDA is not a loopback address', { endpoint: LAMBDA_ENDPOINT });
  process.exit(2);
}

// maxAttempts 1: retries are the state machine's business (Retry fields).
const lambda = LAMBDA_ENDPOINT ? new LambdaClient({ region: REGION, maxAttempts: 1 }) : null;

/** An error a Task state raises, named the way Step Functions names it. */
class TaskError extends Error {
  constructor(name, cause, { retryable = true } = {}) {
    super(cause);
    this.name = name;
    this.retryable = retryable;
  }
  get isRetryable() {
    return this.retryable;
  }
  get isCatchable() {
    return true;
  }
}

async function invokeLambda(functionArn, input) {
  if (!lambda) {
    throw new TaskError('Lambda.SdkClientException', 'no local Lambda endpoint: set AWS_ENDPOINT_URL_LAMBDA');
  }
  let res;
  try {
    res = await lambda.send(
      new InvokeCommand({ FunctionName: functionArn, Payload: new TextEncoder().encode(JSON.stringify(input)) }),
    );
  } catch (err) {
    // An answer from the Invoke API is Lambda.<its error code>; no answer at
    // all (refused, reset) is what Step Functions calls Lambda.SdkClientException.
    const name = err instanceof LambdaServiceException ? `Lambda.${err.name}` : 'Lambda.SdkClientException';
    throw new TaskError(name, err.message || String(err));
  }
  const text = res.Payload ? new TextDecoder().decode(res.Payload) : '';
  if (res.FunctionError) {
    // Step Functions: Error is the function's errorType, Cause its whole error payload.
    let errorType = 'Lambda.Unknown';
    try {
      errorType = JSON.parse(text).errorType || errorType;
    } catch {}
    throw new TaskError(errorType, text);
  }
  return text === '' ? null : JSON.parse(text);
}

/** Maps every Lambda Task state, at any depth, to an invoker of its function. */
function lambdaTaskHandlers(definition, handlers = {}) {
  for (const [name, state] of Object.entries(definition.States || {})) {
    if (state.Type === 'Task') {
      const resource = state.Resource;
      handlers[name] = LAMBDA_ARN.test(resource)
        ? (input) => invokeLambda(resource, input)
        : () => {
            throw new TaskError('States.Runtime', `resource ${resource} is not supported by the local engine`, {
              retryable: false,
            });
          };
    }
    for (const branch of state.Branches || []) lambdaTaskHandlers(branch, handlers);
    if (state.Iterator) lambdaTaskHandlers(state.Iterator, handlers);
    if (state.ItemProcessor) lambdaTaskHandlers(state.ItemProcessor, handlers);
  }
  return handlers;
}

function asText(v) {
  if (v === undefined || v === null) return undefined;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Converts a library event log entry into a history event. */
function historyEvent(ev, index) {
  const out = { index, type: ev.type, timestamp: new Date(ev.timestamp).toISOString() };
  if (ev.state) {
    out.stateName = ev.state.name;
    out.stateType = ev.state.type;
    out.input = ev.state.input;
    if (ev.state.output !== undefined) out.output = ev.state.output;
  }
  if (ev.parentState) {
    out.stateName = ev.parentState.name;
    out.stateType = ev.parentState.type;
  }
  if (ev.type === 'ExecutionStarted') out.input = ev.input;
  if (ev.type === 'ExecutionSucceeded') out.output = ev.output;
  if (ev.Error !== undefined) out.error = ev.Error;
  if (ev.Cause !== undefined) out.cause = asText(ev.Cause);
  if (ev.retry) {
    out.retryAttempt = ev.retry.attempt;
    out.errorEquals = ev.retry.retrier.ErrorEquals;
  }
  if (ev.catch) out.errorEquals = ev.catch.catcher.ErrorEquals;
  if (typeof ev.index === 'number') out.mapIteration = ev.index;
  return out;
}

/** @type {Map<string, object>} executions by ARN */
const executions = new Map();

function summary(x) {
  return {
    executionArn: x.executionArn,
    stateMachineArn: x.stateMachineArn,
    name: x.name,
    status: x.status,
    startDate: x.startDate,
    stopDate: x.stopDate,
  };
}

function describe(x) {
  return {
    ...summary(x),
    input: x.input,
    output: x.output,
    error: x.error,
    cause: x.cause,
    events: x.events,
  };
}

// Definitions the library's validator has accepted. Validation compiles JSON
// schemas on every call (200-500 ms of CPU that blocks every running
// execution), so each distinct definition is validated once.
const validDefinitions = new Set();
const MAX_VALID_DEFINITIONS = 256;

function buildMachine(text, definition) {
  if (!validDefinitions.has(text)) {
    try {
      new StateMachine(structuredClone(definition));
    } catch (err) {
      throw new APIError(400, 'InvalidDefinition', err.message);
    }
    if (validDefinitions.size >= MAX_VALID_DEFINITIONS) validDefinitions.clear();
    validDefinitions.add(text);
  }
  return new StateMachine(definition, { validationOptions: { noValidate: true } });
}

class APIError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function startExecution(req) {
  if (typeof req.definition !== 'string') throw new APIError(400, 'InvalidDefinition', 'definition must be an ASL string');
  let definition;
  try {
    definition = JSON.parse(req.definition);
  } catch (err) {
    throw new APIError(400, 'InvalidDefinition', `definition is not JSON: ${err.message}`);
  }
  const smName = req.stateMachineName || 'deploy';
  const name = req.name || randomUUID();
  if (!/^[A-Za-z0-9_-]{1,80}$/.test(name)) {
    throw new APIError(400, 'InvalidName', `execution name ${JSON.stringify(name)}: use 1-80 of A-Z a-z 0-9 - _`);
  }
  const input = req.input === undefined ? {} : req.input;
  const stateMachineArn = `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${smName}`;
  const executionArn = `arn:aws:states:${REGION}:${ACCOUNT}:execution:${smName}:${name}`;

  // StartExecution is idempotent for the same name and input while the
  // execution runs; any other reuse of a name is ExecutionAlreadyExists.
  const existing = executions.get(executionArn);
  if (existing) {
    if (existing.status === 'RUNNING' && isDeepStrictEqual(existing.input, input)) {
      return { executionArn, startDate: existing.startDate };
    }
    throw new APIError(400, 'ExecutionAlreadyExists', `Execution Already Exists: '${executionArn}'`);
  }

  const machine = buildMachine(req.definition, definition);
  const startDate = new Date().toISOString();
  const run = machine.run(input, {
    overrides: {
      taskResourceLocalHandlers: lambdaTaskHandlers(definition),
      waitTimeOverrides: req.waitTimeOverrides || {},
      retryIntervalOverrides: req.retryIntervalOverrides || {},
    },
    context: {
      Execution: { Id: executionArn, Name: name },
      StateMachine: { Id: stateMachineArn, Name: smName },
    },
  });
  const x = {
    executionArn,
    stateMachineArn,
    name,
    status: 'RUNNING',
    input,
    startDate,
    events: [],
    abort: run.abort,
    done: null,
  };
  executions.set(executionArn, x);
  log('execution started', { executionArn });

  const drained = (async () => {
    for await (const ev of run.eventLogs) x.events.push(historyEvent(ev, x.events.length + 1));
  })();
  // The status flips only after the history is complete, so a reader that sees
  // a final status also sees every event.
  x.done = Promise.allSettled([run.result, drained]).then(([result]) => {
    if (result.status === 'fulfilled') {
      x.status = 'SUCCEEDED';
      x.output = result.value;
    } else if (result.reason instanceof ExecutionAbortedError) {
      x.status = 'ABORTED';
    } else if (result.reason instanceof ExecutionTimeoutError) {
      x.status = 'TIMED_OUT';
      x.error = 'States.Timeout';
    } else {
      const cause = result.reason?.cause ?? result.reason;
      x.status = 'FAILED';
      x.error = cause?.name || 'States.Runtime';
      x.cause = asText(cause?.cause ?? cause?.message);
    }
    x.stopDate = new Date().toISOString();
    delete x.abort;
    log('execution finished', { executionArn, status: x.status, error: x.error });
  });
  return { executionArn, startDate };
}

function validate(req) {
  if (typeof req.definition !== 'string') throw new APIError(400, 'InvalidDefinition', 'definition must be an ASL string');
  let definition;
  try {
    definition = JSON.parse(req.definition);
  } catch (err) {
    return { valid: false, errors: [{ code: 'INVALID_JSON', message: err.message }] };
  }
  const { isValid, errors } = validateASL(definition, { checkPaths: true, checkArn: true });
  return {
    valid: isValid,
    errors: errors.map((e) => ({ code: e['Error code'], message: e.Message })),
  };
}

function lookup(arn) {
  const x = executions.get(arn);
  if (!x) throw new APIError(404, 'ExecutionDoesNotExist', `Execution Does Not Exist: '${arn}'`);
  return x;
}

async function readJSON(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return text === '' ? {} : JSON.parse(text);
  } catch (err) {
    throw new APIError(400, 'InvalidRequest', `request body is not JSON: ${err.message}`);
  }
}

async function route(req, url) {
  const path = url.pathname;
  if (req.method === 'GET' && path === '/healthz') return { ok: true };
  if (req.method === 'POST' && path === '/validate') return validate(await readJSON(req));
  if (path === '/executions') {
    if (req.method === 'POST') return startExecution(await readJSON(req));
    if (req.method === 'GET') {
      const sm = url.searchParams.get('stateMachineName');
      const status = url.searchParams.get('status');
      const list = [...executions.values()]
        .filter((x) => (!sm || x.stateMachineArn.endsWith(`:${sm}`)) && (!status || x.status === status))
        .map(summary);
      return { executions: list };
    }
  }
  if (path.startsWith('/executions/')) {
    let rest = path.slice('/executions/'.length);
    const stop = rest.endsWith('/stop');
    if (stop) rest = rest.slice(0, -'/stop'.length);
    const x = lookup(decodeURIComponent(rest));
    if (stop && req.method === 'POST') {
      if (x.status === 'RUNNING') x.abort();
      await x.done;
      return { stopDate: x.stopDate, status: x.status };
    }
    if (!stop && req.method === 'GET') {
      const waitMs = Math.min(Number(url.searchParams.get('waitMs')) || 0, LONG_POLL_MAX_MS);
      if (waitMs > 0 && x.status === 'RUNNING') {
        await Promise.race([x.done, new Promise((r) => setTimeout(r, waitMs).unref())]);
      }
      return describe(x);
    }
  }
  throw new APIError(404, 'UnknownOperation', `${req.method} ${path}`);
}

const server = http.createServer(async (req, res) => {
  let status = 200;
  let body;
  try {
    body = await route(req, new URL(req.url, 'http://127.0.0.1'));
  } catch (err) {
    status = err instanceof APIError ? err.status : 500;
    body = { __type: err instanceof APIError ? err.type : 'InternalError', message: err.message };
    if (status === 500) log('request failed', { error: String(err.stack || err) });
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
});
// Longer than the Go client's idle timeout, so the server never closes a
// connection the client is about to reuse.
server.keepAliveTimeout = 120_000;

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
  log('engine listening', { port: server.address().port, lambdaEndpoint: LAMBDA_ENDPOINT || null, node: process.version });
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
