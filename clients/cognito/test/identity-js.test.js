// amazon-cognito-identity-js against Latchkey: the whole account life cycle with the client's
// default flow (SRP) and with USER_PASSWORD_AUTH. Only the pool's `endpoint` is Latchkey's.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import identity from 'amazon-cognito-identity-js';
import {
  startSink,
  startLatchkey,
  cognito,
  freshEmail,
  claims,
  USER_POOL_ID,
  CLIENT_ID,
} from './harness.js';

const { CognitoUserPool, CognitoUser, AuthenticationDetails, CognitoUserAttribute } = identity;

let sink;
let server;
let pool;

before(async () => {
  sink = await startSink();
  server = await startLatchkey(sink);
  pool = new CognitoUserPool({ UserPoolId: USER_POOL_ID, ClientId: CLIENT_ID, endpoint: `${server.base}/` });
});

after(async () => {
  await server?.stop();
  await sink?.close();
});

/** Node-style callback API → promise. */
const call = (fn) => new Promise((ok, fail) => fn((err, value) => (err ? fail(err) : ok(value))));

function signUp(email, password) {
  const attributes = [new CognitoUserAttribute({ Name: 'email', Value: email })];
  return call((cb) => pool.signUp(email, password, attributes, null, cb));
}

function authenticate(user, email, password) {
  const details = new AuthenticationDetails({ Username: email, Password: password });
  return new Promise((ok, fail) =>
    user.authenticateUser(details, {
      onSuccess: ok,
      onFailure: fail,
      newPasswordRequired: () => fail(new Error('unexpected NEW_PASSWORD_REQUIRED')),
      mfaRequired: () => fail(new Error('unexpected MFA')),
      customChallenge: () => fail(new Error('unexpected custom challenge')),
    }),
  );
}

function newUser(email, flow) {
  const user = new CognitoUser({ Username: email, Pool: pool });
  if (flow) user.setAuthenticationFlowType(flow);
  return user;
}

async function lifeCycle(flow) {
  const email = freshEmail(flow ? 'plain' : 'srp');
  let password = 'correct horse battery';

  // Sign up: unconfirmed, a masked destination, a code in the mail.
  const signedUp = await signUp(email, password);
  assert.equal(signedUp.userConfirmed, false);
  assert.match(signedUp.userSub, /^[0-9a-f-]{36}$/);
  assert.deepEqual(signedUp.codeDeliveryDetails, {
    AttributeName: 'email',
    DeliveryMedium: 'EMAIL',
    Destination: `${email[0]}***@e***`,
  });

  // Before confirmation the right password is answered UserNotConfirmedException.
  await assert.rejects(authenticate(newUser(email, flow), email, password), { code: 'UserNotConfirmedException' });

  const code = await sink.nextCode(email);
  assert.equal(await call((cb) => newUser(email, flow).confirmRegistration(code, true, cb)), 'SUCCESS');

  // Wrong password, then the right one.
  await assert.rejects(authenticate(newUser(email, flow), email, 'wrong password!'), {
    code: 'NotAuthorizedException',
    message: 'Incorrect username or password.',
  });
  const user = newUser(email, flow);
  const session = await authenticate(user, email, password);
  assert.ok(session.isValid());
  const access = claims(session.getAccessToken().getJwtToken());
  assert.equal(access.token_use, 'access');
  assert.equal(access.client_id, CLIENT_ID);
  assert.equal(access.username, email);
  assert.equal(access.sub, signedUp.userSub);
  const id = claims(session.getIdToken().getJwtToken());
  assert.equal(id.token_use, 'id');
  assert.equal(id.aud, CLIENT_ID);
  assert.equal(id['cognito:username'], email);
  assert.equal(id.email, email);
  assert.equal(id.email_verified, true);

  // getSession answers the cached, valid session; the attributes come from GetUser.
  const current = await call((cb) => user.getSession(cb));
  assert.ok(current.isValid());
  const attributes = await call((cb) => user.getUserAttributes(cb));
  const byName = Object.fromEntries(attributes.map((a) => [a.getName(), a.getValue()]));
  assert.equal(byName.email, email);
  assert.equal(byName.sub, signedUp.userSub);
  assert.equal(byName.email_verified, 'true');

  // refreshSession: new tokens and a rotated refresh token, which the client keeps.
  const refreshed = await call((cb) => user.refreshSession(current.getRefreshToken(), cb));
  assert.ok(refreshed.isValid());
  assert.notEqual(refreshed.getRefreshToken().getToken(), current.getRefreshToken().getToken());
  assert.notEqual(refreshed.getAccessToken().getJwtToken(), current.getAccessToken().getJwtToken());
  assert.equal(claims(refreshed.getAccessToken().getJwtToken()).origin_jti, access.origin_jti);

  // changePassword: the old password stops working, the new one signs in.
  const changed = 'a brand new passphrase';
  assert.equal(await call((cb) => user.changePassword(password, changed, cb)), 'SUCCESS');
  await assert.rejects(authenticate(newUser(email, flow), email, password), { code: 'NotAuthorizedException' });
  password = changed;
  await authenticate(newUser(email, flow), email, password);

  // forgotPassword / confirmPassword with the mailed code.
  const resetter = newUser(email, flow);
  const delivery = await new Promise((ok, fail) =>
    resetter.forgotPassword({ onSuccess: ok, onFailure: fail, inputVerificationCode: ok }),
  );
  assert.equal(delivery.CodeDeliveryDetails.Destination, `${email[0]}***@e***`);
  const resetCode = await sink.nextCode(email);
  const reset = 'reset passphrase 42';
  await new Promise((ok, fail) => resetter.confirmPassword(resetCode, reset, { onSuccess: ok, onFailure: fail }));
  password = reset;

  // Sign in again, then globalSignOut: the old access and refresh tokens fail everywhere.
  const last = newUser(email, flow);
  const final = await authenticate(last, email, password);
  const oldAccess = final.getAccessToken().getJwtToken();
  const oldRefresh = final.getRefreshToken();
  await new Promise((ok, fail) => last.globalSignOut({ onSuccess: ok, onFailure: fail }));

  const getUser = await cognito(server.base, 'AWSCognitoIdentityProviderService.GetUser', { AccessToken: oldAccess });
  assert.equal(getUser.status, 400);
  assert.equal(getUser.type, 'NotAuthorizedException');
  const again = newUser(email, flow);
  await assert.rejects(call((cb) => again.refreshSession(oldRefresh, cb)), { code: 'NotAuthorizedException' });
}

test('the default flow (SRP): sign up, confirm, sign in, refresh, change, reset, sign out everywhere', async () => {
  await lifeCycle(undefined);
});

test('USER_PASSWORD_AUTH: the same life cycle', async () => {
  await lifeCycle('USER_PASSWORD_AUTH');
});

test('unknown users and wrong passwords read the same', async () => {
  for (const flow of [undefined, 'USER_PASSWORD_AUTH']) {
    const email = freshEmail('nobody');
    await assert.rejects(authenticate(newUser(email, flow), email, 'whatever password'), {
      code: 'NotAuthorizedException',
      message: 'Incorrect username or password.',
    });
  }
});
