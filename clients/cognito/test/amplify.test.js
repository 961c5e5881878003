// aws-amplify v6 against Latchkey, configured as the seed's app would be with only the
// endpoints changed: sign up, confirm, sign in with the default flow (SRP), the current user,
// fetchAuthSession (tokens, identity id, credentials), a forced refresh, global sign-out.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Amplify } from 'aws-amplify';
import {
  signUp,
  confirmSignUp,
  signIn,
  getCurrentUser,
  fetchAuthSession,
  signOut,
} from 'aws-amplify/auth';
import {
  startSink,
  startLatchkey,
  cognito,
  freshEmail,
  claims,
  USER_POOL_ID,
  CLIENT_ID,
  IDENTITY_POOL_ID,
  REGION,
} from './harness.js';

let sink;
let server;
/** Every `X-Amz-Target` Amplify sent, in order. */
const targets = [];

before(async () => {
  sink = await startSink();
  server = await startLatchkey(sink);
  const realFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => {
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    const target = headers.get('x-amz-target');
    if (target) targets.push(target);
    return realFetch(input, init);
  };
  Amplify.configure({
    Auth: {
      Cognito: {
        userPoolId: USER_POOL_ID,
        userPoolClientId: CLIENT_ID,
        userPoolEndpoint: server.base,
        identityPoolId: IDENTITY_POOL_ID,
        identityPoolEndpoint: server.base,
      },
    },
  });
});

after(async () => {
  await server?.stop();
  await sink?.close();
});

async function signUpAndConfirm(email, password) {
  const signedUp = await signUp({ username: email, password, options: { userAttributes: { email } } });
  assert.equal(signedUp.isSignUpComplete, false);
  assert.equal(signedUp.nextStep.signUpStep, 'CONFIRM_SIGN_UP');
  assert.equal(signedUp.nextStep.codeDeliveryDetails.destination, `${email[0]}***@e***`);
  assert.equal(signedUp.nextStep.codeDeliveryDetails.deliveryMedium, 'EMAIL');
  const code = await sink.nextCode(email);
  const confirmed = await confirmSignUp({ username: email, confirmationCode: code });
  assert.equal(confirmed.isSignUpComplete, true);
  assert.equal(confirmed.nextStep.signUpStep, 'DONE');
  return signedUp.userId;
}

test('the seed flow: sign up, confirm, sign in (SRP), session, identity, refresh, sign out everywhere', async () => {
  const email = freshEmail('amplify');
  const password = 'correct horse battery';
  const userId = await signUpAndConfirm(email, password);

  // No authFlowType: Amplify's default, USER_SRP_AUTH.
  targets.length = 0;
  const signedIn = await signIn({ username: email, password });
  assert.equal(signedIn.isSignedIn, true);
  assert.equal(signedIn.nextStep.signInStep, 'DONE');
  assert.ok(targets.includes('AWSCognitoIdentityProviderService.RespondToAuthChallenge'), targets.join());

  const current = await getCurrentUser();
  assert.equal(current.username, email);
  assert.equal(current.userId, userId);

  // fetchAuthSession: tokens, the identity id (the seed's cogId) and credentials.
  const session = await fetchAuthSession();
  assert.equal(session.userSub, userId);
  assert.equal(session.tokens.idToken.payload.email, email);
  assert.equal(session.tokens.accessToken.payload.username, email);
  assert.match(session.identityId, new RegExp(`^${REGION}:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`));
  assert.match(session.credentials.accessKeyId, /^ASIA[A-Z2-7]{16}$/);
  assert.ok(session.credentials.secretAccessKey.length >= 40);
  assert.equal(claims(session.credentials.sessionToken).sub, userId);
  assert.ok(session.credentials.expiration > new Date());

  // The identity id is the user's, whichever provider name the ID token is given under.
  const idToken = session.tokens.idToken.toString();
  const legacy = await cognito(server.base, 'AWSCognitoIdentityService.GetId', {
    IdentityPoolId: IDENTITY_POOL_ID,
    Logins: { [`cognito-idp.${REGION}.amazonaws.com/${USER_POOL_ID}`]: idToken },
  });
  assert.equal(legacy.status, 200);
  assert.equal(legacy.body.IdentityId, session.identityId);

  // A forced refresh goes through GetTokensFromRefreshToken and brings new tokens.
  targets.length = 0;
  const refreshed = await fetchAuthSession({ forceRefresh: true });
  assert.ok(targets.includes('AWSCognitoIdentityProviderService.GetTokensFromRefreshToken'), targets.join());
  assert.notEqual(refreshed.tokens.accessToken.toString(), session.tokens.accessToken.toString());
  assert.equal(refreshed.identityId, session.identityId);
  const oldAccess = refreshed.tokens.accessToken.toString();

  // Global sign-out: the tokens stop working, on every path.
  targets.length = 0;
  await signOut({ global: true });
  assert.ok(targets.includes('AWSCognitoIdentityProviderService.GlobalSignOut'), targets.join());
  const getUser = await cognito(server.base, 'AWSCognitoIdentityProviderService.GetUser', { AccessToken: oldAccess });
  assert.equal(getUser.type, 'NotAuthorizedException');
  const getId = await cognito(server.base, 'AWSCognitoIdentityService.GetId', {
    IdentityPoolId: IDENTITY_POOL_ID,
    Logins: { issuer: idToken },
  });
  assert.equal(getId.type, 'NotAuthorizedException');
  await assert.rejects(getCurrentUser(), { name: 'UserUnAuthenticatedException' });

  // Signing in again gives the same identity id.
  await signIn({ username: email, password });
  const again = await fetchAuthSession();
  assert.equal(again.identityId, session.identityId);
  await signOut();
});

test('USER_PASSWORD_AUTH, and the errors Amplify shows', async () => {
  const email = freshEmail('amplify-plain');
  const password = 'correct horse battery';
  await signUp({ username: email, password, options: { userAttributes: { email } } });
  // Amplify turns UserNotConfirmedException into the next step.
  const unconfirmed = await signIn({ username: email, password, options: { authFlowType: 'USER_PASSWORD_AUTH' } });
  assert.equal(unconfirmed.isSignedIn, false);
  assert.equal(unconfirmed.nextStep.signInStep, 'CONFIRM_SIGN_UP');
  const code = await sink.nextCode(email);
  await assert.rejects(confirmSignUp({ username: email, confirmationCode: code === '999999' ? '999998' : '999999' }), {
    name: 'CodeMismatchException',
  });
  await confirmSignUp({ username: email, confirmationCode: code });
  await assert.rejects(
    signIn({ username: email, password: 'not the password', options: { authFlowType: 'USER_PASSWORD_AUTH' } }),
    { name: 'NotAuthorizedException', message: 'Incorrect username or password.' },
  );
  const signedIn = await signIn({ username: email, password, options: { authFlowType: 'USER_PASSWORD_AUTH' } });
  assert.equal(signedIn.isSignedIn, true);
  const session = await fetchAuthSession();
  assert.equal(session.tokens.accessToken.payload.token_use, 'access');
  assert.match(session.identityId, new RegExp(`^${REGION}:`));
  await signOut({ global: true });
});
